package state

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/journal"
)

// Timeline is the history a state belongs to. A cluster starts on timeline
// 1; every restore to a past point starts a new one, so that the records of
// the abandoned history (archived journal segments with the same indexes)
// are never replayed into the new one. History lists every timeline this
// one descends from, oldest first, each with the last index it contributed.
type Timeline struct {
	ID      uint32           `json:"id"`
	History []TimelineBranch `json:"history,omitempty"`
	// Restored describes the restore that started this timeline.
	Restored *RestoreInfo `json:"restored,omitempty"`
}

// TimelineBranch says that timeline ID's history was used up to index Upto
// (inclusive) before its child branched off.
type TimelineBranch struct {
	ID   uint32 `json:"id"`
	Upto uint64 `json:"upto"`
}

// RestoreInfo records where a restore came from, and whether its backups
// are held.
type RestoreInfo struct {
	From   string    `json:"from"`
	Target string    `json:"target"`
	Index  uint64    `json:"index"`
	Time   time.Time `json:"time"`
	At     time.Time `json:"at"`
	// Held: a restored copy writes into no backup destination (backups,
	// schedules, archiving, the journal mirror) until an operator releases
	// it (TypeRestoreRelease): it may be a rehearsal while the original
	// still writes to the same destinations. Restores made before the hold
	// existed have it false.
	Held bool `json:"held,omitempty"`
	// Released is when the hold ended (the restore itself, for one made
	// with take-over), and TakeOver whether this timeline then claimed
	// every destination (a full backup to each).
	Released *time.Time `json:"released,omitempty"`
	TakeOver bool       `json:"take_over,omitempty"`
}

// Holding reports whether the restore's hold is in force.
func (r *RestoreInfo) Holding() bool { return r != nil && r.Held && r.Released == nil }

// RestoreRelease ends a restored timeline's hold; with TakeOver the
// timeline claims every destination (body of TypeRestoreRelease).
type RestoreRelease struct {
	TakeOver bool `json:"take_over,omitempty"`
}

// ErrNotHeld: a release of a timeline whose backups are not held.
var ErrNotHeld = errors.New("backups are not held after a restore")

func (s *Store) applyRestoreRelease(tx *bolt.Tx, now time.Time, c RestoreRelease) (any, error) {
	m := tx.Bucket(bucketMeta)
	var tl Timeline
	if v := m.Get(keyTimeline); v != nil {
		if err := json.Unmarshal(v, &tl); err != nil {
			return nil, fmt.Errorf("read the timeline: %w", err)
		}
	}
	// A copy resumed without taking over may still be made the real
	// recovery later; nothing else is released twice.
	laterTakeOver := c.TakeOver && tl.Restored != nil && tl.Restored.Held && !tl.Restored.TakeOver
	if !tl.Restored.Holding() && !laterTakeOver {
		return fmt.Errorf("%w (timeline %d): %w", ErrNotHeld, max(tl.ID, 1), ErrConflict), nil
	}
	t := now.UTC()
	tl.Restored.Released, tl.Restored.TakeOver = &t, c.TakeOver
	b, err := json.Marshal(tl)
	if err != nil {
		return nil, err
	}
	return tl, m.Put(keyTimeline, b)
}

var keyTimeline = []byte("timeline")

// Timeline returns the state's timeline (1 with no history if never restored).
// Open refuses a record that does not decode and every write encodes a
// Timeline, so a failure here is logged and the zero timeline returned.
func (s *Store) Timeline() Timeline {
	tl, err := s.readTimeline()
	if err != nil {
		s.log.Error("state timeline", "error", err)
	}
	if tl.ID == 0 {
		tl.ID = 1
	}
	return tl
}

// readTimeline decodes the timeline record (the zero Timeline if none).
func (s *Store) readTimeline() (Timeline, error) {
	var tl Timeline
	s.mu.RLock()
	defer s.mu.RUnlock()
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyTimeline); v != nil {
			if err := json.Unmarshal(v, &tl); err != nil {
				return fmt.Errorf("timeline record in the meta bucket: %w", err)
			}
		}
		return nil
	})
	return tl, err
}

// String is "2 (from 1 at 1234)" style: the id and its ancestry.
func (t Timeline) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(t.ID), 10))
	if len(t.History) > 0 {
		b.WriteString(" (")
		for i, h := range t.History {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "timeline %d to index %d", h.ID, h.Upto)
		}
		b.WriteString(")")
	}
	return b.String()
}

// EncodeHistory is the compact form carried in backup manifests:
// "1:1234,2:5678" (timeline:last index used).
func (t Timeline) EncodeHistory() string {
	parts := make([]string, len(t.History))
	for i, h := range t.History {
		parts[i] = fmt.Sprintf("%d:%d", h.ID, h.Upto)
	}
	return strings.Join(parts, ",")
}

// ParseHistory reads EncodeHistory's form.
func ParseHistory(s string) ([]TimelineBranch, error) {
	if s == "" {
		return nil, nil
	}
	var out []TimelineBranch
	for _, p := range strings.Split(s, ",") {
		id, upto, ok := strings.Cut(p, ":")
		a, err1 := strconv.ParseUint(id, 10, 32)
		b, err2 := strconv.ParseUint(upto, 10, 64)
		if !ok || err1 != nil || err2 != nil || a == 0 {
			return nil, fmt.Errorf("timeline history %q: bad element %q", s, p)
		}
		out = append(out, TimelineBranch{ID: uint32(a), Upto: b})
	}
	return out, nil
}

// Rebase is for the offline restore only, on a store no raft node uses: it
// sets the applied term (the journal does not carry raft terms; the restored
// raft snapshot gets this one), the new timeline, and the raft configuration
// the restored node starts with (conf, raft's encoding, at confIndex), which
// replaces that of the cluster the backup came from.
func (s *Store) Rebase(term uint64, tl Timeline, confIndex uint64, conf []byte) error {
	b, err := json.Marshal(tl)
	if err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if err := m.Put(keyAppliedTerm, u64(term)); err != nil {
			return err
		}
		if err := m.Put(keyRaftConfig, append(u64(confIndex), conf...)); err != nil {
			return err
		}
		return m.Put(keyTimeline, b)
	})
}

// Replay applies journal records (decrypted) offline, in one transaction
// per call, exactly as raft would have: commands through the FSM, markers
// and configuration changes only moving the applied index. Records must
// follow the applied index without a gap. It returns an error for a gap or
// an I/O failure; a command's own domain error is part of the history and
// is not an error here.
func (s *Store) Replay(recs []journal.Record, term uint64) error {
	b, err := PrepareReplay(recs, term)
	if err != nil {
		return err
	}
	return s.ApplyReplay(b)
}

// ReplayBatch is a run of journal records turned into raft log entries with
// their commands decoded (PrepareReplay), ready for ApplyReplay. Preparing
// touches no store, so a restore prepares the next batch while the store
// applies the current one.
type ReplayBatch struct {
	logs []*raft.Log
	pre  []prepared
}

// Len is the number of records in the batch.
func (b *ReplayBatch) Len() int {
	if b == nil {
		return 0
	}
	return len(b.logs)
}

// PrepareReplay checks that recs are consecutive and decrypted, and decodes
// their commands (in parallel for a large batch).
func PrepareReplay(recs []journal.Record, term uint64) (*ReplayBatch, error) {
	logs := make([]*raft.Log, len(recs))
	entries := make([]raft.Log, len(recs))
	for i, r := range recs {
		if i > 0 && r.Index != recs[i-1].Index+1 {
			return nil, fmt.Errorf("replay: record %d does not follow record %d: records %d-%d are missing", r.Index, recs[i-1].Index, recs[i-1].Index+1, r.Index-1)
		}
		l := &entries[i]
		l.Index, l.Term, l.AppendedAt = r.Index, term, r.Time
		switch Type(r.Type) {
		case TypeRaftMarker:
			l.Type = raft.LogNoop
		case TypeRaftConfig:
			l.Type, l.Data = raft.LogConfiguration, r.Payload
		default:
			if r.Payload == nil {
				return nil, fmt.Errorf("replay: record %d has no payload (not decrypted)", r.Index)
			}
			l.Type, l.Data = raft.LogCommand, r.Payload
		}
		logs[i] = l
	}
	return &ReplayBatch{logs: logs, pre: prepare(logs)}, nil
}

// ApplyReplay applies a prepared batch offline in one transaction; its
// first record must follow the applied index (see Replay).
func (s *Store) ApplyReplay(b *ReplayBatch) error {
	if b.Len() == 0 {
		return nil
	}
	if s.journal != nil {
		return errors.New("replay: the store is attached to a running node")
	}
	first, last := b.logs[0].Index, b.logs[len(b.logs)-1].Index
	if next := s.applied.Load() + 1; first != next {
		return fmt.Errorf("replay: record %d does not follow the applied index %d: records %d-%d are missing", first, next-1, next, first-1)
	}
	for _, res := range s.applyBatch(b.logs, b.pre, true) {
		if err := asErr(res); errors.Is(err, ErrUnknownCommand) {
			return fmt.Errorf("replay: %w; replay with that build or a newer one, or stop before the entry", err)
		}
		if errors.Is(asErr(res), ErrAbandoned) {
			return fmt.Errorf("replay: %v", res)
		}
	}
	if got := s.applied.Load(); got != last {
		return fmt.Errorf("replay: state stands at %d after applying up to %d", got, last)
	}
	return nil
}

func asErr(v any) error {
	err, _ := v.(error)
	return err
}

// Digest is a SHA-256 over every bucket, key and value of the replicated
// state, leaving out what a restore may legitimately change (the raft term,
// the timeline). Two stores with the same digest hold the same history up to
// the same applied index (the recorded raft configuration is left out too:
// a state written before it was recorded must digest alike). objects is the number of security objects; index
// is the applied index the digest was taken at.
func (s *Store) Digest() (index uint64, digest string, objects int, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	err = s.db.View(func(tx *bolt.Tx) error {
		index = getU64(tx.Bucket(bucketMeta), keyAppliedIndex)
		digest, objects, err = DigestTx(tx)
		return err
	})
	return
}

// DigestTx is Digest inside the caller's transaction.
func DigestTx(tx *bolt.Tx) (string, int, error) {
	h := sha256.New()
	w := bufio.NewWriterSize(h, 64<<10) // few large writes into the hash
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		w.Write(n[:]) // #nosec G104 -- a bufio.Writer over a hash.Hash: hash writes never fail
		w.Write(b)    // #nosec G104 -- a bufio.Writer over a hash.Hash: hash writes never fail
	}
	objects := 0
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		put(name)
		meta := string(name) == string(bucketMeta)
		isObjects := string(name) == string(bucketObjects)
		return b.ForEach(func(k, v []byte) error {
			if meta && (string(k) == string(keyAppliedTerm) || string(k) == string(keyTimeline) || string(k) == string(keyRaftConfig)) {
				return nil
			}
			if isObjects {
				objects++ // counted here: Stats would walk the bucket's pages a second time
			}
			put(k)
			put(v)
			return nil
		})
	})
	w.Flush() // #nosec G104 -- flushes into a hash.Hash, whose writes never fail
	return hex.EncodeToString(h.Sum(nil)), objects, err
}

// TimelineFile, in a journal directory (the node's own and the mirror's),
// says which timeline its records belong to: journal segments do not carry
// it, and a restore must not replay an abandoned history's journal.
const TimelineFile = "timeline.json"

// WriteTimelineFile records tl in journal directory dir.
func WriteTimelineFile(dir string, tl Timeline) error {
	b, err := json.MarshalIndent(tl, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, TimelineFile), b)
}

// ReadTimelineFile reads it; a directory without one is timeline 1 (written
// before timelines existed).
func ReadTimelineFile(dir string) (Timeline, error) {
	b, err := os.ReadFile(filepath.Join(dir, TimelineFile))
	if errors.Is(err, os.ErrNotExist) {
		return Timeline{ID: 1}, nil
	}
	if err != nil {
		return Timeline{}, err
	}
	var tl Timeline
	if err := json.Unmarshal(b, &tl); err != nil || tl.ID == 0 {
		return Timeline{}, fmt.Errorf("%s: not a timeline record: %v", filepath.Join(dir, TimelineFile), err)
	}
	return tl, nil
}
