package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Type identifies a command. Values are part of the raft log and journal
// formats: never renumber.
type Type uint16

const (
	// TypeRaftConfig marks a raft configuration entry in the journal.
	TypeRaftConfig Type = 1
	// TypeRaftMarker stands in the journal for a raft entry the FSM does not
	// apply (leader no-op, barrier), keeping journal indexes contiguous.
	TypeRaftMarker Type = 3
	// TypeInvalid journals an entry that could not be decoded (its raw bytes).
	TypeInvalid Type = 4
	// TypeClusterInit names the cluster and installs the first data key (body: ClusterInit).
	TypeClusterInit Type = 2
	// TypeDEKCreate adds a data key and makes it current (body: barrier.WrappedKey).
	TypeDEKCreate Type = 10
	// TypeDEKRewrap replaces wrapped forms of data keys after a MEK rotation (body: []barrier.WrappedKey).
	TypeDEKRewrap Type = 11
	// TypeTokenCreate stores an access token's hash (body: Token).
	TypeTokenCreate Type = 20
	// TypeTokenRevoke deletes a token (body: TokenRevoke).
	TypeTokenRevoke Type = 21
	// 100 was the unreleased "secret-put" stand-in: retired, never reuse.

	// TypeObjectCreate adds a security object with its first version (body: ObjectCreate).
	TypeObjectCreate Type = 110
	// TypeObjectRotate adds a version (body: ObjectRotate).
	TypeObjectRotate Type = 111
	// TypeObjectState moves an object along its lifecycle (body: ObjectState).
	TypeObjectState Type = 112
	// TypeObjectAttrs changes custom attributes (body: ObjectAttrs).
	TypeObjectAttrs Type = 113
	// TypeObjectRestore puts an object's versions back from a backup (body: ObjectRestore).
	TypeObjectRestore Type = 114
	// TypeWalletCreate adds a wallet (body: Wallet).
	TypeWalletCreate Type = 120
	// TypeWalletDelete removes an empty wallet (body: WalletDelete).
	TypeWalletDelete Type = 121
	// TypeGrant sets or removes an endpoint's permission on a wallet (body: Grant).
	TypeGrant Type = 122
	// TypeEndpointEnroll adds an endpoint and its token (body: EndpointEnroll).
	TypeEndpointEnroll Type = 130
	// TypeEndpointRevoke disables an endpoint (body: EndpointRevoke).
	TypeEndpointRevoke Type = 131
	// TypeUserCreate adds an administrator (body: User).
	TypeUserCreate Type = 140
	// TypeUserUpdate changes an administrator (body: UserUpdate).
	TypeUserUpdate Type = 141
	// TypeUserDelete removes an administrator and its sessions (body: UserDelete).
	TypeUserDelete Type = 142

	// TypeDestinationPut adds or changes a backup destination (body: Destination).
	TypeDestinationPut Type = 150
	// TypeDestinationDelete removes a destination's configuration (body: DestinationDelete).
	TypeDestinationDelete Type = 151
	// TypeArchiveProgress moves a destination's archive mark (body: ArchiveProgress).
	TypeArchiveProgress Type = 152
	// TypeArchivePause pauses or resumes archiving (body: ArchivePause).
	TypeArchivePause Type = 153
	// TypeBackupRecord records a backup's progress (body: BackupRecord).
	TypeBackupRecord Type = 154
	// TypeSchedulePut adds or changes a backup schedule (body: Schedule).
	TypeSchedulePut Type = 155
	// TypeScheduleDelete removes a schedule (body: ScheduleDelete).
	TypeScheduleDelete Type = 156
	// TypeRecoverySet sets the recovery passphrase (body: Recovery).
	TypeRecoverySet Type = 157
	// TypeRestorePoint names the point in the history where it is applied (body: RestorePoint).
	TypeRestorePoint Type = 160
	// TypeRestoreRelease ends the backup hold of a restored timeline (body: RestoreRelease).
	TypeRestoreRelease Type = 161
)

var typeNames = map[Type]string{
	TypeRaftConfig:     "raft-config",
	TypeClusterInit:    "cluster-init",
	TypeRaftMarker:     "raft-marker",
	TypeInvalid:        "invalid",
	TypeDEKCreate:      "dek-create",
	TypeDEKRewrap:      "dek-rewrap",
	TypeTokenCreate:    "token-create",
	TypeTokenRevoke:    "token-revoke",
	TypeObjectCreate:   "object-create",
	TypeObjectRotate:   "object-rotate",
	TypeObjectState:    "object-state",
	TypeObjectAttrs:    "object-attrs",
	TypeObjectRestore:  "object-restore",
	TypeWalletCreate:   "wallet-create",
	TypeWalletDelete:   "wallet-delete",
	TypeGrant:          "grant",
	TypeEndpointEnroll: "endpoint-enroll",
	TypeEndpointRevoke: "endpoint-revoke",
	TypeUserCreate:     "user-create",
	TypeUserUpdate:     "user-update",
	TypeUserDelete:     "user-delete",

	TypeDestinationPut:    "destination-put",
	TypeDestinationDelete: "destination-delete",
	TypeArchiveProgress:   "archive-progress",
	TypeArchivePause:      "archive-pause",
	TypeBackupRecord:      "backup-record",
	TypeSchedulePut:       "schedule-put",
	TypeScheduleDelete:    "schedule-delete",
	TypeRecoverySet:       "recovery-set",
	TypeRestorePoint:      "restore-point",
	TypeRestoreRelease:    "restore-release",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type-%d", uint16(t))
}

// ClearPayload reports whether a command of this type carries no secret in
// the clear, so its journal record may be stored unencrypted (key id 0).
// Data-key commands qualify: they carry only MEK-wrapped keys, and they must
// be readable before the key they introduce is known. Restore points carry
// only a name, and a restore must find them without any data key (also on
// a timeline whose keys it does not have).
func (t Type) ClearPayload() bool {
	return t == TypeRaftConfig || t == TypeRaftMarker || t == TypeClusterInit || t == TypeDEKCreate || t == TypeDEKRewrap ||
		t == TypeRestorePoint
}

// Command is one state mutation as it travels through raft.
// Encoding: u16 type, i64 unix-nano leader time, JSON body.
type Command struct {
	Type Type
	Time time.Time // leader's clock when proposed: the FSM never reads the local clock
	Body []byte
	// pre is Body decoded ahead of the write transaction (see prepare), or
	// nil. It is never encoded.
	pre any
}

const cmdHeader = 2 + 8

// NewCommand encodes body as JSON.
func NewCommand(t Type, now time.Time, body any) (Command, error) {
	// An object creation, the most frequent write, is encoded without
	// reflection: the same bytes json.Marshal gives (objectjson.go). A time
	// json.Marshal refuses goes to json.Marshal for its error.
	if c, ok := body.(ObjectCreate); ok {
		if b, ok := appendObjectCreateJSON(make([]byte, 0, 512), &c); ok {
			return Command{Type: t, Time: now.UTC(), Body: b}, nil
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Command{}, fmt.Errorf("encode %s command: %w", t, err)
	}
	return Command{Type: t, Time: now.UTC(), Body: b}, nil
}

// Marshal encodes the command for the raft log.
func (c Command) Marshal() []byte {
	out := make([]byte, cmdHeader, cmdHeader+len(c.Body))
	binary.BigEndian.PutUint16(out[0:2], uint16(c.Type))
	binary.BigEndian.PutUint64(out[2:10], uint64(c.Time.UnixNano()))
	return append(out, c.Body...)
}

// ErrBadCommand is returned for undecodable log entries.
var ErrBadCommand = errors.New("malformed command")

// ErrUnknownCommand: a committed entry holds a command type this build does
// not know, written by a newer build. Applying it as a failed command would
// leave this node's state without what the command recorded while the
// other nodes have it, so the store applies nothing from that entry on: a
// running node keeps retrying (its status shows an upgrade_required alert)
// until its binary is upgraded; an offline replay stops with this error.
var ErrUnknownCommand = errors.New("command type unknown to this build")

// typeRetired is the unreleased "secret-put" stand-in (see the list above);
// an entry of it is a failed command, as it always was.
const typeRetired Type = 100

// UnmarshalCommand decodes a raft log entry.
func UnmarshalCommand(b []byte) (Command, error) {
	if len(b) < cmdHeader {
		return Command{}, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	return Command{
		Type: Type(binary.BigEndian.Uint16(b[0:2])),
		Time: time.Unix(0, int64(binary.BigEndian.Uint64(b[2:10]))).UTC(), // #nosec G115 -- Unix nanoseconds stored as the bits of an int64: the conversion restores them
		Body: b[cmdHeader:],
	}, nil
}

func (c Command) decode(v any) error {
	if err := json.Unmarshal(c.Body, v); err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrBadCommand, c.Type, err)
	}
	return nil
}
