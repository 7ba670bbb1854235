package dest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// SFTPConfig says how to reach an SFTP server.
type SFTPConfig struct {
	Host string
	Port int // default 22
	User string
	// Password and/or PrivateKeyPEM (OpenSSH, PKCS#8 or SEC 1; ed25519,
	// ECDSA or RSA; unencrypted). The key is tried first.
	Password      string
	PrivateKeyPEM []byte
	// Path is the directory on the server; relative paths start at the
	// user's home directory.
	Path string
	// KnownHostKey is the pinned server key as an authorized_keys line
	// ("ssh-ed25519 AAAA..."). Empty means trust on first use: the key the
	// server presents is accepted, passed to OnHostKey once the connection
	// is up (so the caller can persist it) and pinned for reconnects.
	KnownHostKey string
	OnHostKey    func(key string)
	// Timeout bounds dialing and the SSH handshake; default 30s.
	Timeout time.Duration
}

type sftpDest struct {
	cfg  SFTPConfig
	addr string
	root string
	loc  string

	mu     sync.Mutex
	conn   *ssh.Client
	client *sftp.Client
}

// NewSFTP connects to an SFTP server. The connection is kept and re-dialed
// after it drops.
func NewSFTP(ctx context.Context, cfg SFTPConfig) (Destination, error) {
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	root := path.Clean(cfg.Path)
	if cfg.Path == "" {
		root = "."
	}
	d := &sftpDest{cfg: cfg, addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), root: root}
	shown := root
	if !path.IsAbs(root) {
		shown = "/~/" + strings.TrimPrefix(root, ".")
		shown = strings.TrimSuffix(shown, "/")
	}
	d.loc = "sftp://" + cfg.User + "@" + d.addr + shown
	switch {
	case cfg.Host == "" || cfg.User == "":
		return nil, newError("connect", "", d.loc, ErrInvalid, errors.New("host and user are required"))
	case cfg.Password == "" && len(cfg.PrivateKeyPEM) == 0:
		return nil, newError("connect", "", d.loc, ErrInvalid, errors.New("a password or a private key is required"))
	}
	_, done, err := d.sftp(ctx)
	if err != nil {
		return nil, err
	}
	done()
	return d, nil
}

func (d *sftpDest) Location() string { return d.loc }

// fail wraps err; a dropped connection is closed so the next call re-dials.
func (d *sftpDest) fail(op, name string, c *sftp.Client, err error) error {
	if c != nil && connLost(err) {
		d.drop(c)
	}
	return newError(op, name, d.loc, sftpKind(err), err, d.cfg.Password)
}

func sftpKind(err error) error {
	var hk *hostKeyError
	switch {
	case errors.As(err, &hk):
		return ErrHostKeyChanged
	case strings.Contains(err.Error(), "ssh: unable to authenticate"):
		return ErrAuth
	case errors.Is(err, fs.ErrNotExist):
		return ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		return ErrPermission
	case connLost(err), errors.Is(err, context.DeadlineExceeded):
		return ErrUnreachable
	}
	return nil
}

// connLost: the SSH connection is gone (or was never up).
func connLost(err error) bool {
	var ne net.Error
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, sftp.ErrSSHFxNoConnection) ||
		errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.As(err, &ne)
}

// sftp returns the connected client, dialing if there is none, and a
// function the operation calls when it is done. Until then, the end of ctx
// closes the connection: the sftp package takes no context, so this is how
// a cancelled or timed-out operation returns instead of waiting forever on
// a server that stopped answering (the next operation dials again).
func (d *sftpDest) sftp(ctx context.Context) (*sftp.Client, func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.client
	if c == nil {
		conn, nc, err := d.dial(ctx)
		if err != nil {
			return nil, nil, err
		}
		// The connect deadline also bounds the subsystem start, which
		// would otherwise wait forever on a server that accepted SSH but
		// never answers the sftp init.
		stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) }) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
		c, err = sftp.NewClient(conn, sftp.UseConcurrentWrites(true), sftp.UseFstat(true))
		stop()
		if err != nil {
			conn.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
			return nil, nil, d.fail("connect", "", nil, fmt.Errorf("start sftp subsystem: %w", err))
		}
		nc.SetDeadline(time.Time{}) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
		d.conn, d.client = conn, c
	}
	stop := context.AfterFunc(ctx, func() { d.drop(c) })
	return c, func() { stop() }, nil
}

func (d *sftpDest) drop(c *sftp.Client) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == c {
		d.client.Close() // #nosec G104 -- dropping a connection found broken: the error that caused it is already returned
		d.conn.Close()   // #nosec G104 -- dropping a connection found broken: the error that caused it is already returned
		d.client, d.conn = nil, nil
	}
}

// dial connects and authenticates. The connection's deadline (the connect
// timeout) is still set: the caller clears it once the sftp subsystem is up.
func (d *sftpDest) dial(ctx context.Context) (*ssh.Client, net.Conn, error) {
	var auth []ssh.AuthMethod
	if len(d.cfg.PrivateKeyPEM) > 0 {
		signer, err := ssh.ParsePrivateKey(d.cfg.PrivateKeyPEM)
		if err != nil {
			return nil, nil, newError("connect", "", d.loc, ErrInvalid, fmt.Errorf("parse private key: %w", err))
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if pw := d.cfg.Password; pw != "" {
		auth = append(auth, ssh.Password(pw), ssh.KeyboardInteractive(
			func(_, _ string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					if !echos[i] {
						answers[i] = pw
					}
				}
				return answers, nil
			}))
	}

	var pinned ssh.PublicKey
	if d.cfg.KnownHostKey != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(d.cfg.KnownHostKey))
		if err != nil {
			return nil, nil, newError("connect", "", d.loc, ErrInvalid, fmt.Errorf("parse pinned host key: %w", err))
		}
		pinned = k
	}
	var seen ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: d.cfg.User,
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			seen = key
			if pinned != nil && !bytes.Equal(key.Marshal(), pinned.Marshal()) {
				return &hostKeyError{old: pinned, new: key}
			}
			return nil
		},
		Timeout: d.cfg.Timeout,
	}
	if pinned != nil {
		// Ask for the pinned key's type, so a server that also has keys of
		// other types is not mistaken for a changed one.
		cfg.HostKeyAlgorithms = []string{pinned.Type()}
		if pinned.Type() == ssh.KeyAlgoRSA {
			cfg.HostKeyAlgorithms = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
	}

	dialer := net.Dialer{Timeout: d.cfg.Timeout}
	nc, err := dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, nil, newError("connect", "", d.loc, ErrUnreachable, err)
	}
	nc.SetDeadline(time.Now().Add(d.cfg.Timeout))                              // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) }) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
	c, chans, reqs, err := ssh.NewClientConn(nc, d.addr, cfg)
	stop()
	if err != nil {
		nc.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		if pinned != nil && strings.Contains(err.Error(), "no common algorithm for host key") {
			return nil, nil, newError("connect", "", d.loc, ErrHostKeyChanged,
				fmt.Errorf("server no longer offers a %s host key (pinned %s)", pinned.Type(), ssh.FingerprintSHA256(pinned)))
		}
		return nil, nil, d.fail("connect", "", nil, err)
	}
	if pinned == nil && seen != nil {
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(seen)))
		d.cfg.KnownHostKey = line
		if d.cfg.OnHostKey != nil {
			d.cfg.OnHostKey(line)
		}
	}
	return ssh.NewClient(c, chans, reqs), nc, nil
}

type hostKeyError struct{ old, new ssh.PublicKey }

func (e *hostKeyError) Error() string {
	return fmt.Sprintf("server presents %s %s, pinned is %s %s",
		e.new.Type(), ssh.FingerprintSHA256(e.new), e.old.Type(), ssh.FingerprintSHA256(e.old))
}

func (d *sftpDest) path(name string) string { return path.Join(d.root, name) }

func (d *sftpDest) Save(ctx context.Context, name string, r io.ReadSeeker, size int64) (err error) {
	if err := checkName(name); err != nil {
		return newError("save", name, d.loc, ErrInvalid, err)
	}
	if size < 0 {
		return newError("save", name, d.loc, ErrInvalid, errors.New("negative size"))
	}
	c, done, err := d.sftp(ctx)
	if err != nil {
		return err
	}
	defer done()
	target := d.path(name)
	dir := path.Dir(target)
	if err := c.MkdirAll(dir); err != nil {
		return d.fail("save", name, c, err)
	}
	tmp := path.Join(dir, tempName(path.Base(target)))
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return d.fail("save", name, c, err)
	}
	defer func() {
		if err != nil {
			f.Close()     // #nosec G104 -- closing after an earlier error, which is the one returned; the temp file is removed below
			c.Remove(tmp) // #nosec G104 -- removing the temp file after an earlier error, which is the one returned; one left behind is never listed and Cleanup removes it once stale
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return d.fail("save", name, c, err)
	}
	// An *io.LimitedReader tells sftp the size, so it writes with
	// concurrent requests (64 × 32 KiB in flight) instead of one at a time.
	n, err := f.ReadFrom(&io.LimitedReader{R: ctxReader{ctx, r}, N: size})
	if err == nil && n < size {
		err = errShort(n, size)
	}
	if err == nil {
		if err = f.Sync(); errors.Is(err, sftp.ErrSSHFxOpUnsupported) {
			err = nil // server without fsync@openssh.com
		}
	}
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = c.PosixRename(tmp, target)
	}
	if err != nil {
		return d.saveFail(ctx, c, name, dir, size, err)
	}
	return nil
}

// saveFail classifies a failed save. OpenSSH reports a full disk as a bare
// SSH_FX_FAILURE, so on that code ask statvfs whether the object still fits.
func (d *sftpDest) saveFail(ctx context.Context, c *sftp.Client, name, dir string, size int64, err error) error {
	var se *sftp.StatusError
	if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxFailure {
		if _, ok := c.HasExtension("statvfs@openssh.com"); ok {
			if st, serr := c.StatVFS(dir); serr == nil && st.Bavail*st.Frsize < uint64(size) { // #nosec G115 -- size is the length of a file being written, never negative
				return newError("save", name, d.loc, ErrNoSpace,
					fmt.Errorf("%w (%d bytes free)", err, st.Bavail*st.Frsize), d.cfg.Password)
			}
		}
	}
	return d.fail("save", name, c, err)
}

func (d *sftpDest) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, newError("open", name, d.loc, ErrInvalid, err)
	}
	c, done, err := d.sftp(ctx)
	if err != nil {
		return nil, err
	}
	f, err := c.Open(d.path(name))
	if err != nil {
		done()
		return nil, d.fail("open", name, c, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err == nil && offset > 0 {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; the file was opened for reading
		done()
		return nil, d.fail("open", name, c, err)
	}
	// ctx bounds the reading too, until the caller closes the reader.
	return doneCloser{limit(f, length), done}, nil
}

func (d *sftpDest) Stat(ctx context.Context, name string) (FileInfo, error) {
	if err := checkName(name); err != nil {
		return FileInfo{}, newError("stat", name, d.loc, ErrInvalid, err)
	}
	c, done, err := d.sftp(ctx)
	if err != nil {
		return FileInfo{}, err
	}
	defer done()
	st, err := c.Stat(d.path(name))
	if err == nil && !st.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return FileInfo{}, d.fail("stat", name, c, err)
	}
	return FileInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (d *sftpDest) List(ctx context.Context, prefix string, fn func(FileInfo) error) error {
	if err := checkPrefix(prefix); err != nil {
		return newError("list", prefix, d.loc, ErrInvalid, err)
	}
	var files []FileInfo
	err := d.walk(ctx, prefix, func(c *sftp.Client, rel string, info fs.FileInfo) error {
		if !isTemp(path.Base(rel)) && strings.HasPrefix(rel, prefix) && info.Mode().IsRegular() {
			files = append(files, FileInfo{Name: rel, Size: info.Size(), ModTime: info.ModTime()})
		}
		return nil
	})
	if err != nil {
		return d.wrapWalk("list", prefix, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// doneCloser calls done after closing the reader.
type doneCloser struct {
	io.ReadCloser
	done func()
}

func (r doneCloser) Close() error {
	err := r.ReadCloser.Close()
	r.done()
	return err
}

type walkErr struct {
	c   *sftp.Client
	err error
}

func (e *walkErr) Error() string { return e.err.Error() }

func (d *sftpDest) wrapWalk(op, name string, err error) error {
	var we *walkErr
	if errors.As(err, &we) {
		return d.fail(op, name, we.c, we.err)
	}
	return err
}

// walk calls fn for every non-directory under the part of the tree that can
// hold names starting with prefix.
func (d *sftpDest) walk(ctx context.Context, prefix string, fn func(c *sftp.Client, rel string, info fs.FileInfo) error) error {
	c, done, err := d.sftp(ctx)
	if err != nil {
		return err
	}
	defer done()
	start := d.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = d.path(prefix[:i])
	}
	w := c.Walk(start)
	for w.Step() {
		if err := w.Err(); err != nil {
			if w.Path() == start && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if errors.Is(err, fs.ErrNotExist) { // removed while listing
				continue
			}
			return &walkErr{c, err}
		}
		if err := ctx.Err(); err != nil {
			return &walkErr{c, err}
		}
		info := w.Stat()
		if info.IsDir() {
			continue
		}
		rel := w.Path()
		if d.root != "." {
			rel = strings.TrimPrefix(strings.TrimPrefix(rel, d.root), "/")
		}
		if err := fn(c, rel, info); err != nil {
			return err
		}
	}
	return nil
}

func (d *sftpDest) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return newError("remove", name, d.loc, ErrInvalid, err)
	}
	c, done, err := d.sftp(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := c.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.fail("remove", name, c, err)
	}
	return nil
}

func (d *sftpDest) Usage(ctx context.Context) (Usage, bool, error) {
	c, done, err := d.sftp(ctx)
	if err != nil {
		return Usage{}, false, err
	}
	defer done()
	if _, ok := c.HasExtension("statvfs@openssh.com"); !ok {
		return Usage{}, false, nil
	}
	// The root may not exist before the first save: ask its nearest parent.
	p := d.root
	st, err := c.StatVFS(p)
	for errors.Is(err, fs.ErrNotExist) && p != path.Dir(p) {
		p = path.Dir(p)
		st, err = c.StatVFS(p)
	}
	if err != nil {
		return Usage{}, false, d.fail("usage", "", c, err)
	}
	return Usage{Total: st.Blocks * st.Frsize, Free: st.Bavail * st.Frsize}, true, nil
}

// Cleanup removes temp files of saves that never finished once they are
// StaleTempAge old (by the server's clock, compared with ours).
func (d *sftpDest) Cleanup(ctx context.Context) error {
	cutoff := time.Now().Add(-StaleTempAge)
	err := d.walk(ctx, "", func(c *sftp.Client, rel string, info fs.FileInfo) error {
		if !isTemp(path.Base(rel)) || !info.ModTime().Before(cutoff) {
			return nil
		}
		if err := c.Remove(d.path(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return &walkErr{c, err}
		}
		return nil
	})
	if err != nil {
		return d.wrapWalk("cleanup", "", err)
	}
	return nil
}

func (d *sftpDest) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		return nil
	}
	d.client.Close() // #nosec G104 -- the client only ends its session on the connection, whose Close below is checked
	err := d.conn.Close()
	d.client, d.conn = nil, nil
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return newError("close", "", d.loc, nil, err)
	}
	return nil
}

// GenerateKeyPair makes an ed25519 key for one SFTP destination: the private
// key as an OpenSSH PEM block (for SFTPConfig.PrivateKeyPEM) and the public
// key as an authorized_keys line to paste on the server.
func GenerateKeyPair() (privatePEM []byte, authorizedKey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "coffer backup")
	if err != nil {
		return nil, "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " coffer-backup"
	return pem.EncodeToMemory(block), line, nil
}
