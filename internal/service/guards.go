package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/coffer-kms/coffer/internal/state"
)

// The guards of the core that every part's operations pass: the keystore is
// open, the lifecycle lock's read side is held, the caller may act on a
// wallet.

// checkOpen refuses early (without locks) while uninitialised or sealed, so
// that such a refusal is not masked by a lookup error.
func (s *core) checkOpen() error {
	switch s.svc.State() {
	case StateUninitialized:
		return ErrUninitialized
	case StateSealed:
		return ErrSealed
	}
	return nil
}

// openForRead takes the lifecycle read lock and checks the keystore is open.
func (s *core) openForRead() (func(), error) {
	s.mu.RLock()
	if err := s.requireOpenLocked(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	if s.runlock == nil { // a core not made by New (tests)
		return s.mu.RUnlock, nil
	}
	return s.runlock, nil
}

// applyOpen proposes a command with the lifecycle read-locked, requiring an
// open keystore (every write goes through the journal, which needs the data key).
func (s *core) applyOpen(ctx context.Context, t state.Type, body any) (any, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.applyResult(ctx, t, body)
}

// authorizeWallet checks that the caller may act on objects of wallet with
// permission need: key administrators may everywhere, endpoints where granted.
func (s *core) authorizeWallet(ctx context.Context, wallet string, need Permission, what string) (Identity, error) {
	id, err := caller(ctx)
	if err != nil {
		return id, err
	}
	if id.Kind == KindEndpoint {
		grant, err := s.walletGrant(wallet, id.Name)
		return id, endpointGranted(id, wallet, grant, err, need, what)
	}
	if !id.Has(RoleKeyAdmin) {
		return id, fmt.Errorf("%w: %s needs the %s role or an endpoint grant (caller %s)", ErrForbidden, what, RoleKeyAdmin, id.Actor())
	}
	return id, nil
}

// endpointGranted checks an endpoint's grant on wallet (as
// state.WalletGrant read it, with its error) against need.
func endpointGranted(id Identity, wallet, grant string, err error, need Permission, what string) error {
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if have := Permission(grant); !have.Includes(need) {
		if have == "" {
			// Do not tell an endpoint which wallets exist or hold what.
			return fmt.Errorf("%w: %s needs %s permission; endpoint %q has no grant on that wallet", ErrForbidden, what, need, id.Name)
		}
		return fmt.Errorf("%w: %s needs %s permission on wallet %q; endpoint %q has %s", ErrForbidden, what, need, wallet, id.Name, have)
	}
	return nil
}
