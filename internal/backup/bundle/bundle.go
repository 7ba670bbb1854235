// Package bundle reads and writes Coffer backup files.
//
// One file holds one backup: a fixed header, the age ciphertext of a zstd
// stream of the payload, and a trailer holding the manifest (JSON, no
// secrets). The layout is specified in FORMAT.md beside this file.
//
// Writing and reading stream: memory stays flat whatever the payload size.
// [ReadManifest] reads only the end of the file, so a catalog can be rebuilt
// from remote files with one ranged read each.
//
// Every format problem is reported as an [*Error] that wraps exactly one of
// [ErrNotBundle], [ErrTruncated], [ErrCorrupt], [ErrWrongKey] or
// [ErrUnsupported] and names the byte offset where it was found. Errors never
// contain passphrases or secret keys. Other errors come from the
// [io.ReaderAt] or [io.Writer] given by the caller, or from invalid
// arguments.
package bundle

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"
)

// FormatVersion is the format version this package writes and reads.
const FormatVersion = 1

// Kinds of backup (Manifest.Kind).
const (
	KindFull        = "full"
	KindIncremental = "incremental"
	KindSegment     = "segment"
	KindDump        = "dump"
	KindAudit       = "audit" // one closed audit log file of a node
)

// Manifest describes a backup. It is stored in clear in the file's trailer
// and never contains secrets.
//
// The manifest returned by [ReadManifest] and [Verify] without decryption is
// protected against accidental damage only (CRC-32C). [Open] and [Verify]
// with decryption also compare it with the copy sealed inside the age
// payload, so a manifest they return is as authentic as the payload.
type Manifest struct {
	Format        int               `json:"format"` // FormatVersion
	ID            string            `json:"id"`     // set by the caller
	Kind          string            `json:"kind"`   // KindFull, KindIncremental, KindSegment, KindDump, KindAudit
	ClusterID     string            `json:"cluster_id"`
	Node          string            `json:"node"`
	BaseFullID    string            `json:"base_full_id,omitempty"`
	FirstIndex    uint64            `json:"first_index"` // raft/journal index range covered
	LastIndex     uint64            `json:"last_index"`
	FirstTime     time.Time         `json:"first_time,omitzero"`
	LastTime      time.Time         `json:"last_time,omitzero"`
	Created       time.Time         `json:"created"`
	Software      string            `json:"software"`
	PlainSize     int64             `json:"plain_size"`     // payload bytes written; set by Close
	PayloadSize   int64             `json:"payload_size"`   // age ciphertext bytes; set by Close
	PayloadSHA256 string            `json:"payload_sha256"` // hex SHA-256 of the age ciphertext; set by Close
	Recipients    []string          `json:"recipients"`     // "passphrase:<label>" or age X25519 public keys "age1..."; set by NewWriter
	Extra         map[string]string `json:"extra,omitempty"`
}

// Encryption says whom a new backup is encrypted to: either a passphrase
// (age scrypt recipient, which age allows only alone) or one or more age
// X25519 public keys.
type Encryption struct {
	Passphrase []byte
	// Label names the passphrase in Manifest.Recipients as
	// "passphrase:<Label>" ("default" if empty). It is public: it must not
	// be the passphrase, and holds no control characters (at most 128 bytes).
	Label string
	// ScryptWorkFactor is log2 of the scrypt cost: 0 means 18 (age's
	// default); 10 to 20 are accepted. Values below 18 are for tests.
	ScryptWorkFactor int
	// Recipients are age X25519 public keys ("age1..."), exclusive with
	// Passphrase.
	Recipients []string
}

// Decryption holds the secrets that may open a backup. All of them are
// tried; either may be empty, not both.
type Decryption struct {
	Passphrase []byte
	Identities []string // age X25519 secret keys "AGE-SECRET-KEY-1..."
}

// The errors every format problem wraps (through an [*Error]).
var (
	// ErrNotBundle: the file does not start with the bundle magic.
	ErrNotBundle = errors.New("bundle: not a Coffer backup")
	// ErrTruncated: the file is shorter than it was written (the trailer
	// is missing), or shorter than the size the caller gave.
	ErrTruncated = errors.New("bundle: truncated")
	// ErrCorrupt: a checksum, length, hash or authentication tag does not
	// match, or a field is malformed.
	ErrCorrupt = errors.New("bundle: corrupt")
	// ErrWrongKey: the file is intact but none of the given passphrase or
	// identities opens it.
	ErrWrongKey = errors.New("bundle: wrong passphrase or identity")
	// ErrUnsupported: the file is intact but has a format version this
	// build does not know.
	ErrUnsupported = errors.New("bundle: unsupported format")
)

// Error describes a format problem: what is wrong and where.
type Error struct {
	Kind   error  // ErrNotBundle, ErrTruncated, ErrCorrupt, ErrWrongKey or ErrUnsupported
	Offset int64  // byte offset in the file of the damaged or missing part
	Reason string // what is wrong, never secret
	Err    error  // underlying error (age, zstd, JSON), or nil
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%v at offset %d: %s", e.Kind, e.Offset, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func errf(kind error, off int64, format string, args ...any) *Error {
	return &Error{Kind: kind, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// GenerateIdentity returns a new age X25519 identity ("AGE-SECRET-KEY-1...")
// and its recipient ("age1..."), for Decryption.Identities and
// Encryption.Recipients.
func GenerateIdentity() (identity, recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", fmt.Errorf("bundle: generating identity: %w", err)
	}
	return id.String(), id.Recipient().String(), nil
}

const (
	defaultWorkFactor = 18
	minWorkFactor     = 10
	maxWorkFactor     = 20 // also the most a reader accepts (2^20 × 1 KiB = 1 GiB of scrypt memory)
	maxLabel          = 128
	passphrasePrefix  = "passphrase:"
)

// recipients parses enc into age recipients and their fingerprints.
func (enc *Encryption) recipients() ([]age.Recipient, []string, error) {
	switch {
	case len(enc.Passphrase) > 0 && len(enc.Recipients) > 0:
		return nil, nil, errors.New("bundle: Encryption: a passphrase and recipients are exclusive (age allows a passphrase only alone)")
	case len(enc.Passphrase) > 0:
		label := enc.Label
		if label == "" {
			label = "default"
		}
		if len(label) > maxLabel || strings.ContainsFunc(label, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\uFFFD' }) {
			return nil, nil, fmt.Errorf("bundle: Encryption: label must be at most %d bytes of printable UTF-8", maxLabel)
		}
		if label == string(enc.Passphrase) {
			return nil, nil, errors.New("bundle: Encryption: the label is public and must not be the passphrase")
		}
		wf := enc.ScryptWorkFactor
		if wf == 0 {
			wf = defaultWorkFactor
		}
		if wf < minWorkFactor || wf > maxWorkFactor {
			return nil, nil, fmt.Errorf("bundle: Encryption: scrypt work factor %d out of range %d..%d", wf, minWorkFactor, maxWorkFactor)
		}
		r, err := age.NewScryptRecipient(string(enc.Passphrase))
		if err != nil {
			return nil, nil, errors.New("bundle: Encryption: invalid passphrase")
		}
		r.SetWorkFactor(wf)
		return []age.Recipient{r}, []string{passphrasePrefix + label}, nil
	case len(enc.Recipients) > 0:
		rs := make([]age.Recipient, 0, len(enc.Recipients))
		fps := make([]string, 0, len(enc.Recipients))
		for i, s := range enc.Recipients {
			r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
			if err != nil {
				// A public key: safe to name. But a caller may have
				// passed a secret key here by mistake, so do not echo it.
				return nil, nil, fmt.Errorf("bundle: Encryption: recipient #%d is not an age X25519 public key (age1...)", i+1)
			}
			fp := r.String()
			for _, other := range fps {
				if other == fp {
					return nil, nil, fmt.Errorf("bundle: Encryption: recipient %s given twice", fp)
				}
			}
			rs = append(rs, r)
			fps = append(fps, fp)
		}
		return rs, fps, nil
	}
	return nil, nil, errors.New("bundle: Encryption: no passphrase and no recipients")
}

// identities parses dec into age identities, and describes them (publicly)
// for a wrong-key error.
func (dec *Decryption) identities() ([]age.Identity, string, error) {
	var ids []age.Identity
	var given []string
	if len(dec.Passphrase) > 0 {
		id, err := age.NewScryptIdentity(string(dec.Passphrase))
		if err != nil {
			return nil, "", errors.New("bundle: Decryption: invalid passphrase")
		}
		id.SetMaxWorkFactor(maxWorkFactor)
		ids = append(ids, id)
		given = append(given, "a passphrase")
	}
	for i, s := range dec.Identities {
		id, err := age.ParseX25519Identity(strings.TrimSpace(s))
		if err != nil {
			// age's message could quote the key: do not wrap it.
			return nil, "", fmt.Errorf("bundle: Decryption: identity #%d is not an age X25519 secret key (AGE-SECRET-KEY-1...)", i+1)
		}
		ids = append(ids, id)
		given = append(given, "the identity of "+id.Recipient().String())
	}
	if len(ids) == 0 {
		return nil, "", errors.New("bundle: Decryption: no passphrase and no identity")
	}
	return ids, strings.Join(given, ", "), nil
}
