// Package fsutil holds the one durable-file helper every Coffer file goes
// through: write a temp file in the target directory, fsync it, close it,
// rename it over the target, and fsync the directory. A crash at any point
// leaves either the old or the new file, never a mix.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Permissions for files and directories that hold secrets or state.
const (
	FileMode os.FileMode = 0o600
	DirMode  os.FileMode = 0o700
)

// EnsureDir creates dir (and parents) with mode 0700 and tightens an existing
// dir to 0700.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, DirMode); err != nil { // #nosec G302 -- a directory: DirMode is 0700 (owner only; x is needed to enter it)
		return fmt.Errorf("set permissions on %s: %w", dir, err)
	}
	return nil
}

// WriteFile atomically replaces path with data, mode 0600.
func WriteFile(path string, data []byte) error {
	return WriteFileFrom(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileFrom atomically replaces path with whatever fill writes, mode 0600.
// If fill or any step fails, the target is untouched and the temp file removed.
func WriteFileFrom(path string, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: create temp file: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
			if rerr := os.Remove(tmpName); rerr != nil {
				err = fmt.Errorf("%w (and the temp file could not be removed: %v)", err, rerr)
			}
		}
	}()
	if err = tmp.Chmod(FileMode); err != nil {
		return fmt.Errorf("write %s: chmod temp file: %w", path, err)
	}
	if err = fill(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err = os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	if err = SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Remove deletes path (a missing file is not an error) and fsyncs its directory.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// ErrDirSync is what SyncDir's errors wrap. From WriteFile and
// WriteFileFrom it means that the file was renamed into place and only its
// directory was not synced: the new file is there, but a power loss may
// take it back.
var ErrDirSync = errors.New("fsync directory")

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrDirSync, dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w %s: %w", ErrDirSync, dir, err)
	}
	return nil
}
