package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// passphraseAttempt slows down guesses at a passphrase that come over the
// network, like failed logins: per source address and across every source
// (what names the passphrase: "open", "change-passphrase", "recovery").
// The first few attempts are free; after that each waits longer, up to the
// login throttle's maximum. Calls through the local control socket, and
// calls without a transport (in-process), are not slowed: the socket is as
// privileged as the data dir itself.
//
// done reports the outcome: wrong (the passphrase was checked and was
// wrong) keeps the attempt counted; nil clears the source's count; any
// other error takes the attempt back (nothing was checked).
func (s *core) passphraseAttempt(ctx context.Context, what string) (done func(err error), err error) {
	c := CallFrom(ctx)
	if c == nil || c.Transport == "" || c.Transport == "socket" || c.Identity.Local {
		return func(error) {}, nil
	}
	host := c.Source
	if i := strings.LastIndex(host, ":"); i > 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	keys := []string{what + ":source:" + host, what + ":all"}
	d, release, err := s.throttle.begin(ctx, keys...)
	if errors.Is(err, context.Canceled) {
		// The request ended (the server stops, the client went away):
		// not the throttle's doing.
		return nil, fmt.Errorf("waiting for earlier passphrase attempts: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: waited for earlier passphrase attempts: %v", ErrThrottled, err)
	}
	if d > 0 {
		if err := s.cfg.Sleep(ctx, d); err != nil {
			release()
			return nil, fmt.Errorf("%w: passphrase attempts are slowed down after repeated failures: %v", ErrThrottled, err)
		}
	}
	return func(err error) {
		switch {
		case err == nil:
			s.throttle.succeed(keys...)
		case errors.Is(err, ErrWrongPassphrase):
			s.log.Warn("wrong passphrase", "passphrase", what, "source", c.Source, "transport", c.Transport)
		default:
			s.throttle.takeBack(keys...)
		}
		release()
	}, nil
}

// errNotChecked is the outcome of an attempt that ended before its
// passphrase was checked (it is taken back).
var errNotChecked = errors.New("passphrase not checked")

// takeBack uncounts one attempt from each key (it was not a failure).
func (t *throttle) takeBack(keys ...string) {
	t.mu.Lock()
	for _, k := range keys {
		if f := t.fails[k]; f != nil && f.n > 0 {
			f.n--
		}
	}
	t.mu.Unlock()
}
