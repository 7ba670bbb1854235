package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AppRole secret ids: an endpoint's second way to log in through the Vault
// API (auth/approle/login). A secret id is stored like a token (only its
// SHA-256, kind TokenAppRole, subject the endpoint), expires, may be limited
// to a number of logins, and is deleted with its endpoint. It never
// authenticates a request itself: it is exchanged for a login token.

// TokenAppRole is the kind of an AppRole secret id.
const TokenAppRole = "approle"

// TypeAppRoleLogin spends one use of an AppRole secret id and creates a
// login token for its endpoint, at once (body: AppRoleLogin).
const TypeAppRoleLogin Type = 137

// AppRoleLogin names the secret id (its hash) and the login token to create.
type AppRoleLogin struct {
	SecretHash string `json:"secret_hash"`
	Endpoint   string `json:"endpoint"` // the role id presented
	Token      Token  `json:"token"`
}

func init() {
	typeNames[TypeAppRoleLogin] = "approle-login"
}

// checkAppRoleSecret validates a new secret id (its endpoint is active and
// it expires): a non-nil result is the domain error, err an I/O failure.
func checkAppRoleSecret(tx *bolt.Tx, t Token) (any, error) {
	if t.Expires == nil {
		return bad("an AppRole secret id needs an expiry"), nil
	}
	if t.UsesLeft < 0 {
		return bad("an AppRole secret id's uses must not be negative"), nil
	}
	e, err := load[Endpoint](tx.Bucket(bucketEndpoints), t.Subject, fmt.Sprintf("endpoint %q", t.Subject))
	if err != nil {
		return resultOrIO(err)
	}
	if e.State != "active" {
		return fmt.Errorf("endpoint %q is %s: %w", t.Subject, e.State, ErrConflict), nil
	}
	return nil, nil
}

func (s *Store) applyAppRoleLogin(tx *bolt.Tx, now time.Time, c AppRoleLogin) (any, error) {
	if err := checkHash("secret id hash", c.SecretHash); err != nil {
		return err, nil
	}
	b := tx.Bucket(bucketTokens)
	var sec Token
	v := b.Get([]byte(c.SecretHash))
	if v == nil {
		return fmt.Errorf("secret id: %w", ErrNotFound), nil
	}
	if err := decodeJSON(v, &sec); err != nil {
		return nil, err
	}
	if sec.Kind != TokenAppRole || sec.Subject != c.Endpoint {
		return fmt.Errorf("secret id: %w", ErrNotFound), nil
	}
	if sec.Expires != nil && !sec.Expires.After(now) {
		return fmt.Errorf("secret id expired at %s: %w", sec.Expires.Format(time.RFC3339), ErrNotFound), nil
	}
	if c.Token.Kind != TokenEndpoint || c.Token.Subject != sec.Subject {
		return bad("an AppRole login creates a login token of the secret id's endpoint"), nil
	}
	switch {
	case sec.UsesLeft == 1:
		if err := b.Delete([]byte(c.SecretHash)); err != nil {
			return nil, err
		}
	case sec.UsesLeft > 1:
		sec.UsesLeft--
		if err := putJSON(b, []byte(c.SecretHash), sec); err != nil {
			return nil, err
		}
	}
	return s.applyTokenCreate(tx, now, c.Token)
}

// TokensOf lists the tokens of a kind and subject (hashes, never tokens).
func (s *Store) TokensOf(kind, subject string) ([]Token, error) {
	var out []Token
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			var t Token
			if err := decodeJSON(v, &t); err != nil {
				return err
			}
			if t.Kind == kind && t.Subject == subject {
				out = append(out, t)
			}
			return nil
		})
	})
	return out, err
}
