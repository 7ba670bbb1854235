package dest

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// dirDest stores objects as files under a directory: files 0600, directories
// 0700, every save through fsutil.WriteFileFrom (temp file beside the target,
// fsync, rename, fsync of the directory).
type dirDest struct {
	root string
	loc  string
}

// NewDir opens the directory path as a destination, creating it (0700) if
// missing. An existing directory keeps its mode.
func NewDir(path string) (Destination, error) {
	if path == "" {
		return nil, newError("open", "", "dir:", ErrInvalid, errors.New("empty path"))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, newError("open", "", "dir:"+path, ErrInvalid, err)
	}
	d := &dirDest{root: abs, loc: "dir:" + abs}
	st, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(abs, fsutil.DirMode); err == nil {
			st, err = os.Stat(abs)
		}
	}
	if err != nil {
		return nil, d.fail("open", "", err)
	}
	if !st.IsDir() {
		return nil, newError("open", "", d.loc, ErrInvalid, errors.New("not a directory"))
	}
	return d, nil
}

func (d *dirDest) Location() string { return d.loc }
func (d *dirDest) Close() error     { return nil }

func (d *dirDest) fail(op, name string, err error) error {
	return newError(op, name, d.loc, dirKind(err), err)
}

func dirKind(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ErrNoSpace
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return ErrPermission
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return ErrNotFound
	case errors.Is(err, syscall.EIO), errors.Is(err, syscall.ENXIO), errors.Is(err, syscall.ESTALE),
		errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.ETIMEDOUT):
		// A vanished USB disk or NFS server.
		return ErrUnreachable
	}
	return nil
}

func (d *dirDest) path(name string) string {
	return filepath.Join(d.root, filepath.FromSlash(name))
}

func (d *dirDest) Save(ctx context.Context, name string, r io.ReadSeeker, size int64) error {
	if err := checkName(name); err != nil {
		return newError("save", name, d.loc, ErrInvalid, err)
	}
	if size < 0 {
		return newError("save", name, d.loc, ErrInvalid, errors.New("negative size"))
	}
	target := d.path(name)
	if err := d.mkdirs(filepath.Dir(target)); err != nil {
		return d.fail("save", name, err)
	}
	err := fsutil.WriteFileFrom(target, func(w io.Writer) error {
		n, err := io.CopyN(w, ctxReader{ctx, r}, size)
		if errors.Is(err, io.EOF) {
			return errShort(n, size)
		}
		return err
	})
	if err != nil {
		return d.fail("save", name, err)
	}
	return nil
}

// mkdirs creates dir and its missing parents (0700) below the root, fsyncing
// each parent a directory was created in.
func (d *dirDest) mkdirs(dir string) error {
	if dir == d.root {
		return nil
	}
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if err := d.mkdirs(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, fsutil.DirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(dir))
}

func (d *dirDest) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, newError("open", name, d.loc, ErrInvalid, err)
	}
	f, err := os.Open(d.path(name))
	if err != nil {
		return nil, d.fail("open", name, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = &fs.PathError{Op: "open", Path: f.Name(), Err: fs.ErrNotExist}
	}
	if err == nil && offset > 0 {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; the file was opened for reading
		return nil, d.fail("open", name, err)
	}
	return limit(f, length), nil
}

func (d *dirDest) Stat(ctx context.Context, name string) (FileInfo, error) {
	if err := checkName(name); err != nil {
		return FileInfo{}, newError("stat", name, d.loc, ErrInvalid, err)
	}
	st, err := os.Stat(d.path(name))
	if err == nil && !st.Mode().IsRegular() {
		err = &fs.PathError{Op: "stat", Path: d.path(name), Err: fs.ErrNotExist}
	}
	if err != nil {
		return FileInfo{}, d.fail("stat", name, err)
	}
	return FileInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (d *dirDest) List(ctx context.Context, prefix string, fn func(FileInfo) error) error {
	if err := checkPrefix(prefix); err != nil {
		return newError("list", prefix, d.loc, ErrInvalid, err)
	}
	var files []FileInfo
	err := d.walk(ctx, prefix, func(rel string, de fs.DirEntry) error {
		if isTemp(de.Name()) || !strings.HasPrefix(rel, prefix) {
			return nil
		}
		info, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) { // removed while listing
			return nil
		}
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			files = append(files, FileInfo{Name: rel, Size: info.Size(), ModTime: info.ModTime()})
		}
		return nil
	})
	if err != nil {
		return d.fail("list", prefix, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// walk calls fn for every non-directory under the part of the tree that can
// hold names starting with prefix, with its slash-separated name.
func (d *dirDest) walk(ctx context.Context, prefix string, fn func(rel string, de fs.DirEntry) error) error {
	start := d.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = d.path(prefix[:i])
	}
	err := filepath.WalkDir(start, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel), de)
	})
	return err
}

func (d *dirDest) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return newError("remove", name, d.loc, ErrInvalid, err)
	}
	if err := fsutil.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.fail("remove", name, err)
	}
	return nil
}

func (d *dirDest) Usage(ctx context.Context) (Usage, bool, error) {
	u, ok, err := statfs(d.root)
	if err != nil {
		return Usage{}, false, d.fail("usage", "", err)
	}
	return u, ok, nil
}

// Cleanup removes temp files of saves that never finished (a crash between
// creating the temp file and renaming it) once they are StaleTempAge old.
func (d *dirDest) Cleanup(ctx context.Context) error {
	cutoff := time.Now().Add(-StaleTempAge)
	err := d.walk(ctx, "", func(rel string, de fs.DirEntry) error {
		if !isTemp(de.Name()) {
			return nil
		}
		info, err := de.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			return nil
		}
		return fsutil.Remove(d.path(rel))
	})
	if err != nil {
		return d.fail("cleanup", "", err)
	}
	return nil
}
