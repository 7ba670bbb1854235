package service

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/coffer-kms/coffer/internal/lifecycle"
	"github.com/coffer-kms/coffer/internal/state"
)

// Transit signing keys: an EC key pair object of the wallet (P-256 is
// "ecdsa-p256", P-384 "ecdsa-p384"). The service signs with the private
// key of a version and verifies with its public key; a signature is
// "vault:v<version>:" + base64(signature), ASN.1 DER by default or r||s
// ("jws" marshaling).

// Transit signing key types.
const (
	TransitECDSAP256 = "ecdsa-p256"
	TransitECDSAP384 = "ecdsa-p384"
)

// transitSigningType is o's Transit signing type, "" when it is not one.
func transitSigningType(o state.Object) string {
	if o.Type == TypeKeyPair && strings.EqualFold(o.Algorithm, "EC") {
		switch o.Length {
		case 256:
			return TransitECDSAP256
		case 384:
			return TransitECDSAP384
		}
	}
	return ""
}

// SignRequest is one Transit sign or verify.
type SignRequest struct {
	Input         []byte
	HashAlgorithm string // sha2-256 when empty
	Prehashed     bool   // Input is already the digest
	JWS           bool   // r||s instead of ASN.1 DER
	KeyVersion    uint64 // sign: 0 = latest
	Signature     string // verify
}

func (r SignRequest) digest() ([]byte, error) {
	if r.Prehashed {
		return r.Input, nil
	}
	f, err := hashFunc(r.HashAlgorithm)
	if err != nil {
		return nil, err
	}
	h := f()
	h.Write(r.Input)
	return h.Sum(nil), nil
}

// signer loads version's private key of a signing key.
func (kr *transitKeyring) signer(version uint64) (*ecdsa.PrivateKey, error) {
	if transitSigningType(kr.o) == "" {
		return nil, fmt.Errorf("%w: key %s is not a signing key; create one with type %s or %s", ErrInvalid, kr.o.Name, TransitECDSAP256, TransitECDSAP384)
	}
	der, err := kr.material(version)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("key %s version %d: %w", kr.o.ID, version, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s version %d is not an EC key", kr.o.ID, version)
	}
	return ek, nil
}

// TransitSign signs a request's input with a signing key (read, as Vault's
// sign needs only an update on the sign path; an active key only).
func (s *Objects) TransitSign(ctx context.Context, wallet, name string, r SignRequest) (string, uint64, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return "", 0, err
	}
	defer unlock()
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, "signing with a Transit key")
	if err != nil {
		return "", 0, err
	}
	if !lifecycle.CanProtect(kr.o.State) {
		return "", 0, fmt.Errorf("%w: key %s is %s; only an active key signs", ErrState, kr.o.Name, kr.o.State)
	}
	version := r.KeyVersion
	if version == 0 {
		version = kr.o.Latest
	}
	d, err := r.digest()
	if err != nil {
		return "", 0, err
	}
	k, err := kr.signer(version)
	if err != nil {
		return "", 0, err
	}
	var sig []byte
	if r.JWS {
		rr, ss, err := ecdsa.Sign(rand.Reader, k, d)
		if err != nil {
			return "", 0, fmt.Errorf("signing with %s version %d: %w", kr.o.ID, version, err)
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*n)
		rr.FillBytes(sig[:n])
		ss.FillBytes(sig[n:])
	} else if sig, err = k.Sign(rand.Reader, d, crypto.Hash(0)); err != nil {
		return "", 0, fmt.Errorf("signing with %s version %d: %w", kr.o.ID, version, err)
	}
	enc := base64.StdEncoding.EncodeToString(sig)
	if r.JWS {
		enc = base64.RawURLEncoding.EncodeToString(sig)
	}
	return "vault:v" + strconv.FormatUint(version, 10) + ":" + enc, version, nil
}

// TransitVerifySignature checks a signature made by TransitSign (read).
func (s *Objects) TransitVerifySignature(ctx context.Context, wallet, name string, r SignRequest) (bool, error) {
	rest, ok := strings.CutPrefix(r.Signature, "vault:v")
	vs, body, ok2 := strings.Cut(rest, ":")
	version, err := strconv.ParseUint(vs, 10, 64)
	if !ok || !ok2 || err != nil || version == 0 {
		return false, fmt.Errorf("%w: signature is not in the form vault:v<version>:<base64>", ErrInvalid)
	}
	dec := base64.StdEncoding.DecodeString
	if r.JWS {
		dec = base64.RawURLEncoding.DecodeString
	}
	sig, err := dec(body)
	if err != nil {
		return false, fmt.Errorf("%w: signature: invalid base64", ErrInvalid)
	}
	d, err := r.digest()
	if err != nil {
		return false, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return false, err
	}
	defer unlock()
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, "verifying with a Transit key")
	if err != nil {
		return false, err
	}
	if transitSigningType(kr.o) == "" {
		return false, fmt.Errorf("%w: key %s is not a signing key", ErrInvalid, kr.o.Name)
	}
	var pubDER []byte
	for _, v := range kr.o.Versions {
		if v.Version == version && !v.Destroyed {
			pubDER = v.Public
		}
	}
	if pubDER == nil {
		return false, fmt.Errorf("%w: key %s has no usable version %d", ErrInvalid, kr.o.Name, version)
	}
	pk, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		return false, fmt.Errorf("public key of %s version %d: %w", kr.o.ID, version, err)
	}
	ek, ok := pk.(*ecdsa.PublicKey)
	if !ok {
		return false, fmt.Errorf("public key of %s version %d is not an EC key", kr.o.ID, version)
	}
	if r.JWS {
		n := (ek.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return false, nil
		}
		return ecdsa.Verify(ek, d, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])), nil
	}
	return ecdsa.VerifyASN1(ek, d, sig), nil
}
