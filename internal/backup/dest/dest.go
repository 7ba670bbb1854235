// Package dest keeps every place a backup can be written behind one small
// interface, the way restic keeps its storage backends: a directory (also the
// built-in LOCAL destination under the data dir), an SFTP server and an S3
// bucket. Each backend maps its own errors to the sentinel errors below, so
// callers decide with errors.Is and IsPermanent, never by backend.
//
// Retries and other cross-cutting behaviour are thin wrappers that embed a
// Destination (see WithRetry).
package dest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// FileInfo describes one stored object. Name is relative to the destination
// root, slash-separated.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Usage is the space of the file system behind a destination, in bytes.
type Usage struct {
	Total, Free uint64
}

// Destination is one place backups are stored. Names are slash-separated
// relative paths such as "backups/2026/x.cbk" or "catalog.json"; absolute
// paths, "..", "." and empty elements are rejected with ErrInvalid.
//
// All methods are safe for concurrent use.
type Destination interface {
	// Location names the destination for messages, without secrets:
	// "dir:/mnt/b", "sftp://user@host:22/path", "s3://endpoint/bucket/prefix".
	Location() string
	// Save stores exactly size bytes read from r under name, replacing any
	// object of that name. It is atomic: a reader of the destination sees the
	// old object or the new one, never a partial one. r is read from its
	// current position; a retrying wrapper seeks back there before each try.
	Save(ctx context.Context, name string, r io.ReadSeeker, size int64) error
	// Open reads the object from offset; length <= 0 reads to the end. An
	// offset at or past the end gives an empty reader.
	Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
	// Stat describes one object; a missing one (or a directory) is ErrNotFound.
	Stat(ctx context.Context, name string) (FileInfo, error)
	// List calls fn for every object whose name starts with prefix (a plain
	// string prefix: "backups/" or "backups/2026-0"), sorted by name. Temp
	// files of unfinished saves are never listed. An error from fn stops the
	// listing and is returned as is.
	List(ctx context.Context, prefix string, fn func(FileInfo) error) error
	// Remove deletes an object. Removing a missing object is not an error, so
	// a retried Remove whose first try got through succeeds.
	Remove(ctx context.Context, name string) error
	// Usage reports the space of the storage behind the destination; false
	// when the backend cannot tell (S3, an SFTP server without statvfs).
	Usage(ctx context.Context) (Usage, bool, error)
	// Close releases connections. The destination is unusable afterwards.
	Close() error
}

// Cleaner is implemented by destinations whose saves use temp files that a
// crash can leave behind (dir and SFTP; S3 uploads are single requests).
// Cleanup removes temp files older than StaleTempAge, so that a save still
// running in another process is never disturbed. It is not run at open:
// the caller runs it, for example after a backup run.
type Cleaner interface {
	Cleanup(ctx context.Context) error
}

// StaleTempAge is how old a temp file must be before Cleanup removes it.
const StaleTempAge = time.Hour

// Sentinel errors. Every backend maps its errors to these (errors.Is).
var (
	ErrNotFound       = errors.New("not found")
	ErrUnreachable    = errors.New("destination unreachable")
	ErrAuth           = errors.New("authentication failed")
	ErrPermission     = errors.New("no write permission")
	ErrBucketMissing  = errors.New("bucket missing")
	ErrHostKeyChanged = errors.New("host key changed")
	ErrNoSpace        = errors.New("no space left on destination")
	// ErrInvalid is a bad name or configuration: retrying cannot help.
	ErrInvalid = errors.New("invalid")
)

var permanent = []error{ErrNotFound, ErrAuth, ErrPermission, ErrBucketMissing, ErrHostKeyChanged, ErrNoSpace, ErrInvalid}

// IsPermanent reports whether retrying err cannot help: true for every
// sentinel but ErrUnreachable. Unclassified errors (timeouts, dropped
// connections, server errors) are worth a retry.
func IsPermanent(err error) bool {
	for _, k := range permanent {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// Error is the error every Destination method returns: what was being done,
// on which object and destination, the sentinel (Kind, nil when the backend
// could not classify the failure) and the backend's own error. It never
// holds a password or secret key.
type Error struct {
	Op       string // "save", "open", "stat", "list", "remove", "usage", "connect", "cleanup"
	Name     string // object name or list prefix; may be empty
	Location string
	Kind     error
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Name != "" {
		b.WriteString(" " + strconv.Quote(e.Name))
	}
	b.WriteString(" on " + e.Location)
	if e.Kind != nil {
		b.WriteString(": " + e.Kind.Error())
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// newError builds an *Error. Should the backend's message contain one of the
// secrets (a server echoing a credential), the message is redacted and the
// backend's error chain dropped; the Kind survives.
func newError(op, name, loc string, kind, err error, secrets ...string) error {
	if err != nil {
		msg := err.Error()
		redacted := msg
		for _, s := range secrets {
			if s != "" {
				redacted = strings.ReplaceAll(redacted, s, "**redacted**")
			}
		}
		if redacted != msg {
			err = errors.New(redacted)
		}
	}
	return &Error{Op: op, Name: name, Location: loc, Kind: kind, Err: err}
}

// checkName validates an object name.
func checkName(name string) error {
	switch {
	case name == "" || name == ".":
		return errors.New("empty name")
	case strings.HasPrefix(name, "/"):
		return errors.New("absolute path")
	case strings.ContainsAny(name, "\\\x00"):
		return errors.New("backslash or NUL in name")
	case !fs.ValidPath(name):
		return errors.New(`".", ".." or empty path element`)
	case isTemp(lastElem(name)):
		return errors.New("name reserved for temp files")
	}
	return nil
}

// checkPrefix validates a List prefix: like a name, but empty is allowed and
// so are a trailing slash and a partial last element.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if strings.HasPrefix(prefix, "/") || strings.ContainsAny(prefix, "\\\x00") {
		return errors.New("absolute path, backslash or NUL in prefix")
	}
	elems := strings.Split(prefix, "/")
	for i, e := range elems {
		last := i == len(elems)-1
		if e == ".." || (!last && (e == "" || e == ".")) {
			return errors.New(`".", ".." or empty path element in prefix`)
		}
	}
	return nil
}

func lastElem(name string) string {
	return name[strings.LastIndexByte(name, '/')+1:]
}

// Temp files are named like fsutil's: ".<base>.tmp-<random>" beside the
// target, so a directory listing can always tell them apart.
func isTemp(base string) bool {
	return strings.HasPrefix(base, ".") && strings.Contains(base, ".tmp-")
}

func tempName(base string) string {
	return "." + base + ".tmp-" + randomHex(6)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errShort reports a reader that ended before size bytes.
func errShort(n, size int64) error {
	return fmt.Errorf("reader ended after %d of %d bytes", n, size)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// limit applies Open's length to a reader positioned at the offset.
func limit(rc io.ReadCloser, length int64) io.ReadCloser {
	if length <= 0 {
		return rc
	}
	return readCloser{io.LimitReader(rc, length), rc}
}

// ProbeError is what Test returns: the step that failed and why.
type ProbeError struct {
	Step string // "write probe", "read probe back", "delete probe"
	Err  error
}

func (e *ProbeError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *ProbeError) Unwrap() error { return e.Err }

// ErrProbeMismatch: the probe read back differs from what was written.
var ErrProbeMismatch = errors.New("probe read back differs from what was written")

// Test checks a destination end to end: it writes a small probe object, reads
// it back and compares, then deletes it. The error is a *ProbeError naming
// the step, wrapping the sentinel (ErrUnreachable, ErrAuth, ErrPermission,
// ErrBucketMissing, ErrHostKeyChanged, ErrNoSpace).
func Test(ctx context.Context, d Destination) error {
	name := "coffer-probe-" + randomHex(8)
	data := []byte("coffer destination probe " + time.Now().UTC().Format(time.RFC3339Nano) + " " + randomHex(16) + "\n")
	if err := d.Save(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
		return &ProbeError{"write probe", err}
	}
	got, err := readAll(ctx, d, name, int64(len(data)))
	if err == nil && !bytes.Equal(got, data) {
		err = ErrProbeMismatch
	}
	if err != nil {
		d.Remove(ctx, name) // #nosec G104 -- removing the probe after the failed read-back, which is the error returned; a probe left behind holds only a timestamp and random text
		return &ProbeError{"read probe back", err}
	}
	if err := d.Remove(ctx, name); err != nil {
		return &ProbeError{"delete probe", err}
	}
	return nil
}

func readAll(ctx context.Context, d Destination, name string, max int64) ([]byte, error) {
	rc, err := d.Open(ctx, name, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, max+1))
}
