package dest

import (
	"context"
	"io"
	"time"
)

// WithRetry wraps d so that failed calls are tried again, up to attempts
// tries in all, waiting backoff, then twice that, and so on (at most a
// minute). Permanent errors (IsPermanent) and a done context end it at once.
// Save seeks the reader back to where it started before each new try; List
// does not repeat names it already passed to fn.
func WithRetry(d Destination, attempts int, backoff time.Duration) Destination {
	if attempts < 1 {
		attempts = 1
	}
	return &retryDest{Destination: d, attempts: attempts, backoff: backoff}
}

type retryDest struct {
	Destination
	attempts int
	backoff  time.Duration
}

// Unwrap returns the wrapped destination.
func (r *retryDest) Unwrap() Destination { return r.Destination }

// Cleanup passes through to a wrapped Cleaner (and is a no-op otherwise).
func (r *retryDest) Cleanup(ctx context.Context) error {
	if c, ok := r.Destination.(Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}

func (r *retryDest) retry(ctx context.Context, f func() error) error {
	wait := r.backoff
	for i := 1; ; i++ {
		err := f()
		_, stop := err.(errStop)
		if err == nil || stop || IsPermanent(err) || i >= r.attempts || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, time.Minute)
	}
}

func (r *retryDest) Save(ctx context.Context, name string, rd io.ReadSeeker, size int64) error {
	start, err := rd.Seek(0, io.SeekCurrent)
	if err != nil {
		return r.Destination.Save(ctx, name, rd, size) // cannot rewind: one try
	}
	first := true
	return r.retry(ctx, func() error {
		if !first {
			if _, err := rd.Seek(start, io.SeekStart); err != nil {
				return err
			}
		}
		first = false
		return r.Destination.Save(ctx, name, rd, size)
	})
}

func (r *retryDest) Open(ctx context.Context, name string, offset, length int64) (rc io.ReadCloser, err error) {
	err = r.retry(ctx, func() error {
		rc, err = r.Destination.Open(ctx, name, offset, length)
		return err
	})
	return rc, err
}

func (r *retryDest) Stat(ctx context.Context, name string) (fi FileInfo, err error) {
	err = r.retry(ctx, func() error {
		fi, err = r.Destination.Stat(ctx, name)
		return err
	})
	return fi, err
}

// errStop marks an error returned by List's fn: it is the caller's, never retried.
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }

func (r *retryDest) List(ctx context.Context, prefix string, fn func(FileInfo) error) error {
	var last string
	seen := false
	err := r.retry(ctx, func() error {
		return r.Destination.List(ctx, prefix, func(fi FileInfo) error {
			if seen && fi.Name <= last {
				return nil // passed on by an earlier try; names come sorted
			}
			if err := fn(fi); err != nil {
				return errStop{err}
			}
			last, seen = fi.Name, true
			return nil
		})
	})
	if s, ok := err.(errStop); ok {
		return s.err
	}
	return err
}

func (r *retryDest) Remove(ctx context.Context, name string) error {
	return r.retry(ctx, func() error { return r.Destination.Remove(ctx, name) })
}

func (r *retryDest) Usage(ctx context.Context) (u Usage, ok bool, err error) {
	err = r.retry(ctx, func() error {
		u, ok, err = r.Destination.Usage(ctx)
		return err
	})
	return u, ok, err
}
