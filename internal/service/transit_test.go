package service

import (
	"errors"
	"testing"
)

// Transit results carry ciphertexts and plaintexts only; a ciphertext made
// under one key does not open under another.
func TestTransitKeysAreSeparate(t *testing.T) {
	s := kvSvc(t)
	ctx := rootCtx()
	for _, k := range []string{"a", "b"} {
		if _, err := s.Objects.CreateTransitKey(ctx, "kvw", k, TransitAES256); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Objects.TransitEncrypt(ctx, "kvw", "a", []TransitItem{{Plaintext: []byte("secret")}}, false)
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	dec, err := s.Objects.TransitDecrypt(ctx, "kvw", "b", []TransitItem{{Ciphertext: res[0].Ciphertext}})
	if err != nil || !errors.Is(dec[0].Err, ErrInvalid) || dec[0].Plaintext != nil {
		t.Fatalf("decrypt under another key: %+v %v", dec, err)
	}
	if _, err := s.Objects.TransitEncrypt(ctx, "kvw", "missing", []TransitItem{{Plaintext: []byte("x")}}, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("encrypt with a missing key without upsert: %v", err)
	}
	if _, err := s.Objects.CreateTransitKey(ctx, "kvw", "a", TransitAES128); !errors.Is(err, ErrConflict) {
		t.Fatalf("re-create with another type: %v", err)
	}
}
