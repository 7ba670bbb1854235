// Package keystore holds Coffer's master encryption keys (MEKs) at rest.
//
// It is modelled on the TDE keystore of enterprise PostgreSQL: keystore.ks
// holds every MEK generation, sealed with AES-256-GCM under a key encryption
// key (KEK) derived from the operator's passphrase with Argon2id;
// keystore.aks is an optional auto-open copy sealed under a key derived from
// the machine identity and the absolute path of the keystore directory, so
// the server can open the keystore at boot without a passphrase on the
// machine (and at the path) where auto-open was enabled.
//
// Every file is written atomically (fsutil.WriteFile) and carries a header
// CRC-32C, its total length and a SHA-256 trailer, so that a damaged file is
// reported as truncated or corrupt and never as a wrong passphrase. The byte
// layout is in FORMAT.md.
//
// No key material and no passphrase ever appears in an error, a log line or
// the formatted value of a Keyring.
package keystore

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// File names inside the keystore directory and passphrase bounds.
const (
	FileName         = "keystore.ks"
	AutoOpenFileName = "keystore.aks"
	MinPassphrase    = 8   // bytes
	MaxPassphrase    = 200 // bytes
)

// KDFParams are the Argon2id parameters that turn a passphrase into the KEK.
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is the second recommended Argon2id option of RFC 9106 (t=3,
// 64 MiB, 4 lanes).
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Bounds applied to KDF parameters, both configured ones and those read from a
// file (so that a crafted file cannot make Open allocate unbounded memory or
// spin for hours).
const (
	MaxKDFTime      = 100
	MaxKDFMemoryKiB = 4 * 1024 * 1024 // 4 GiB
)

func (p KDFParams) validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxKDFTime:
		return fmt.Errorf("argon2id time %d out of range 1..%d", p.Time, MaxKDFTime)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads %d out of range 1..255", p.Threads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxKDFMemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB out of range %d..%d KiB (at least 8 KiB per thread)",
			p.MemoryKiB, 8*uint32(p.Threads), MaxKDFMemoryKiB)
	}
	return nil
}

// Sentinel errors. Returned errors wrap them (test with errors.Is) and add
// context such as the file path and what was expected, never secrets.
var (
	ErrNotInitialized     = errors.New("keystore not initialized")
	ErrAlreadyInitialized = errors.New("keystore already initialized")
	ErrWrongPassphrase    = errors.New("wrong passphrase")
	ErrTruncated          = errors.New("keystore file truncated")
	ErrCorrupt            = errors.New("keystore file corrupt")
	ErrUnsupportedVersion = errors.New("keystore file format not supported by this build")
	ErrPassphraseLength   = errors.New("passphrase length out of range")
	ErrAutoOpenDisabled   = errors.New("auto-open is not enabled (no keystore.aks)")
	ErrMachineMismatch    = errors.New("keystore.aks was made on another machine or for a keystore directory at another path")
	ErrAutoOpenStale      = errors.New("keystore.aks is older than keystore.ks, probably an interrupted rotation or passphrase change: open with the passphrase; auto-open is rebuilt then")
	// ErrAutoOpenDamaged wraps ErrCorrupt or ErrTruncated from OpenAuto
	// when it is keystore.aks (not keystore.ks) that is damaged: the
	// passphrase still opens the keystore.
	ErrAutoOpenDamaged = errors.New("keystore.aks is damaged: open with the passphrase, then enable auto-open again")
	// ErrAutoOpenNewer wraps ErrUnsupportedVersion from OpenAuto when
	// keystore.aks names a format version newer than this build's (written
	// by a newer Coffer, then downgraded).
	ErrAutoOpenNewer = errors.New("keystore.aks was written by a newer version of Coffer: open with the passphrase, then enable auto-open again to rewrite it for this version")

	// ErrNotDurable: keystore.ks was replaced by the new file, but
	// syncing its directory failed, so a power loss could bring back the
	// previous file. Rotate returns it with the keyring of the new file,
	// which is the one to use from then on.
	ErrNotDurable = errors.New("keystore.ks was replaced, but its directory could not be synced to disk (a power loss could bring back the previous file)")

	// ErrStaleKeyring is returned by Rotate and EnableAutoOpen when the
	// Keyring passed in was not opened from (or produced by writing) the
	// keystore.ks now on disk, e.g. because it was rotated or re-sealed since.
	// Writing from such a keyring would drop generations or undo a passphrase
	// change. Open the keystore again.
	ErrStaleKeyring = errors.New("keyring is older than keystore.ks on disk (rotated or re-sealed since it was opened): open the keystore again")
	// ErrUnknownGeneration is returned by Unwrap for a generation the keyring does not hold.
	ErrUnknownGeneration = errors.New("unknown master key generation")
	// ErrUnwrap is returned by Unwrap when the wrapped value does not authenticate.
	ErrUnwrap = errors.New("wrapped value failed authentication (wrong generation, wrong associated data, or tampered)")
	// ErrKeyringWiped is returned by a Keyring after Wipe.
	ErrKeyringWiped = errors.New("keyring was wiped")
)

// Options configure a Store.
type Options struct {
	// KDF for new keystores and passphrase changes. The zero value means
	// DefaultKDF. Opening always uses the parameters stored in the file.
	KDF KDFParams
	// MachineIdentity returns the bytes that bind keystore.aks to this
	// machine. nil means DefaultMachineIdentity.
	MachineIdentity func() ([]byte, error)
	// Warn, if set, receives errors that do not fail the operation in
	// progress: keystore.aks could not be rebuilt after keystore.ks was
	// written (Rotate, ChangePassphrase) or after Open found it stale. The
	// aks is then stale, OpenAuto says so, and the next successful Open
	// retries. The errors carry no secrets.
	Warn func(error)
}

// Store is a keystore directory. Its methods are safe for concurrent use; they
// are serialised by a mutex. Two Stores (or processes) on one directory are
// not coordinated beyond the atomicity of each file write.
type Store struct {
	mu     sync.Mutex
	dir    string
	abs    string
	absErr error
	opts   Options
}

// New returns a Store for the keystore directory dir (for example
// <data-dir>/keystore). Nothing is read or created until a method is called.
func New(dir string, opts Options) *Store {
	abs, err := filepath.Abs(dir)
	if err != nil {
		err = fmt.Errorf("keystore directory %s: absolute path: %w", dir, err)
	}
	return &Store{dir: dir, abs: filepath.Clean(abs), absErr: err, opts: opts}
}

// Dir returns the keystore directory as given to New.
func (s *Store) Dir() string { return s.dir }

func (s *Store) ksPath() string  { return filepath.Join(s.dir, FileName) }
func (s *Store) aksPath() string { return filepath.Join(s.dir, AutoOpenFileName) }

func (s *Store) kdf() KDFParams {
	if s.opts.KDF == (KDFParams{}) {
		return DefaultKDF
	}
	return s.opts.KDF
}

func (s *Store) warn(err error) {
	if err != nil && s.opts.Warn != nil {
		s.opts.Warn(err)
	}
}

// CheckPassphrase says whether p is acceptable as a keystore passphrase.
func CheckPassphrase(p []byte) error { return checkPassphrase(p) }

func checkPassphrase(p []byte) error {
	if len(p) < MinPassphrase || len(p) > MaxPassphrase {
		return fmt.Errorf("%w: must be %d to %d bytes, got %d", ErrPassphraseLength, MinPassphrase, MaxPassphrase, len(p))
	}
	return nil
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("stat %s: %w", path, err)
}

// Exists reports whether keystore.ks exists.
func (s *Store) Exists() (bool, error) {
	return fileExists(s.ksPath())
}

// AutoOpenEnabled reports whether keystore.aks exists.
func (s *Store) AutoOpenEnabled() (bool, error) {
	return fileExists(s.aksPath())
}

// readKS reads keystore.ks; a missing file is ErrNotInitialized.
func (s *Store) readKS() ([]byte, error) {
	data, err := readLimited(s.ksPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNotInitialized, s.ksPath())
	}
	return data, err
}

// Init creates the keystore directory (0700) and keystore.ks (0600) holding
// MEK generation 1, sealed under passphrase. A leftover keystore.aks without
// a keystore.ks belongs to no keystore and is removed first.
func (s *Store) Init(passphrase []byte) (*Keyring, error) {
	if err := checkPassphrase(passphrase); err != nil {
		return nil, err
	}
	kdf := s.kdf()
	if err := kdf.validate(); err != nil {
		return nil, fmt.Errorf("keystore KDF parameters: %w", err)
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	defer clear(key)
	k, err := s.create(passphrase, kdf, []mek{{number: 1, created: now(), key: key}}, 1)
	if err != nil && k != nil {
		k.Wipe()
		return nil, err
	}
	return k, err
}

// create writes a new keystore.ks holding gens (current the one in use),
// sealed under passphrase with a fresh salt. It refuses an existing
// keystore.ks and removes a leftover keystore.aks that belongs to none.
// With ErrNotDurable the keyring of the file written comes back too.
func (s *Store) create(passphrase []byte, kdf KDFParams, gens []mek, current uint32) (*Keyring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.absErr != nil {
		return nil, s.absErr
	}
	if err := fsutil.EnsureDir(s.dir); err != nil {
		return nil, err
	}
	if ok, err := fileExists(s.ksPath()); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("%w: %s exists", ErrAlreadyInitialized, s.ksPath())
	}
	if err := fsutil.Remove(s.aksPath()); err != nil {
		return nil, err
	}
	var salt [saltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	kek := deriveKEK(passphrase, salt[:], kdf)
	defer clear(kek)
	return s.writeKS(gens, current, sealing{kdf: kdf, salt: salt, kek: kek})
}

// writeKS seals gens under sl, writes keystore.ks and returns the keyring for
// the written file. Caller holds s.mu. The keyring copies gens and sl.kek.
// When the file was renamed into place but its directory not synced, the
// keyring comes back with an error wrapping ErrNotDurable: the caller uses
// it or wipes it.
func (s *Store) writeKS(gens []mek, current uint32, sl sealing) (*Keyring, error) {
	payload := encodeMEKs(gens, current)
	defer clear(payload)
	file, err := sealKS(sl, payload)
	if err != nil {
		return nil, err
	}
	k, err := newKeyring(gens, current, sl, sha256.Sum256(file))
	if err != nil {
		return nil, err
	}
	if err := writeKSFile(s.ksPath(), file); err != nil {
		if errors.Is(err, fsutil.ErrDirSync) {
			// Renamed into place; only the directory sync failed.
			return k, fmt.Errorf("%w: %w", ErrNotDurable, err)
		}
		k.Wipe()
		return nil, err
	}
	return k, nil
}

// writeKSFile writes keystore.ks atomically (a variable for tests that make
// a step of the write fail).
var writeKSFile = fsutil.WriteFile

// Open opens keystore.ks with the passphrase. If keystore.aks exists, opens
// on this machine and is stale (built from an older keystore.ks), it is
// rebuilt; an aks that does not open here is left alone.
func (s *Store) Open(passphrase []byte) (*Keyring, error) {
	if err := checkPassphrase(passphrase); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.openPassphrase(passphrase)
	if err != nil {
		return nil, err
	}
	s.warn(s.refreshStaleAKS(k))
	return k, nil
}

// openPassphrase reads, verifies and decrypts keystore.ks. Caller holds s.mu.
func (s *Store) openPassphrase(passphrase []byte) (*Keyring, error) {
	data, err := s.readKS()
	if err != nil {
		return nil, err
	}
	h, err := parseKS(s.ksPath(), data)
	if err != nil {
		return nil, err
	}
	kek := deriveKEK(passphrase, h.salt[:], h.kdf)
	defer clear(kek)
	payload, err := openKS(h, data, kek)
	if err != nil {
		// No path: the answer may go to an unauthenticated network caller.
		return nil, ErrWrongPassphrase
	}
	defer clear(payload)
	gens, current, err := decodeMEKs(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: decrypted payload: %v", ErrCorrupt, s.ksPath(), err)
	}
	defer wipeMEKs(gens)
	return newKeyring(gens, current, sealing{kdf: h.kdf, salt: h.salt, kek: kek}, sha256.Sum256(data))
}

// refreshStaleAKS rebuilds keystore.aks from k if it exists, opens here, and
// was built from another keystore.ks. Caller holds s.mu.
func (s *Store) refreshStaleAKS(k *Keyring) error {
	a, err := s.readAKS()
	if errors.Is(err, ErrAutoOpenDisabled) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s after open: %w", s.aksPath(), err)
	}
	defer a.wipe()
	if a.ksHash == k.r.ksHash {
		return nil
	}
	if err := s.writeAKS(k); err != nil {
		return fmt.Errorf("rebuild stale %s: %w", s.aksPath(), err)
	}
	return nil
}

// OpenAuto opens the keystore with keystore.aks, without the passphrase.
func (s *Store) OpenAuto() (*Keyring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := s.readKS()
	if err != nil {
		return nil, err
	}
	if _, err := parseKS(s.ksPath(), data); err != nil {
		return nil, err
	}
	if ok, err := fileExists(s.aksPath()); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("%w: %s does not exist", ErrAutoOpenDisabled, s.aksPath())
	}
	a, err := s.readAKS()
	damaged := errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated)
	if errors.Is(err, ErrUnsupportedVersion) && damaged {
		// A newer version field over a frame this build cannot check: a
		// newer layout, or damage (the version bytes themselves).
		return nil, &tagged{msg: "keystore.aks was written by a newer version of Coffer, or is damaged: open with the passphrase, then enable auto-open again: " + err.Error(),
			errs: []error{ErrAutoOpenNewer, ErrAutoOpenDamaged, err}}
	}
	if errors.Is(err, ErrUnsupportedVersion) {
		return nil, fmt.Errorf("%w: %w", ErrAutoOpenNewer, err)
	}
	if damaged {
		return nil, fmt.Errorf("%w: %w", ErrAutoOpenDamaged, err)
	}
	if err != nil {
		return nil, err
	}
	defer a.wipe()
	if a.ksHash != sha256.Sum256(data) {
		return nil, fmt.Errorf("%w (%s)", ErrAutoOpenStale, s.aksPath())
	}
	return newKeyring(a.gens, a.current, a.seal, a.ksHash)
}

// tagged is an error with its own message that is also each of errs
// (errors.Is).
type tagged struct {
	msg  string
	errs []error
}

func (e *tagged) Error() string   { return e.msg }
func (e *tagged) Unwrap() []error { return e.errs }

// readAKS reads, verifies and decrypts keystore.aks. A missing file is
// ErrAutoOpenDisabled. Caller holds s.mu.
func (s *Store) readAKS() (*aksContent, error) {
	path := s.aksPath()
	data, err := readLimited(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrAutoOpenDisabled, path)
	}
	if err != nil {
		return nil, err
	}
	h, err := parseAKS(path, data)
	if err != nil {
		return nil, err
	}
	key, err := s.aksKey(h.salt[:])
	if err != nil {
		return nil, err
	}
	defer clear(key)
	payload, err := openAKS(h, data, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMachineMismatch, path)
	}
	defer clear(payload)
	a, err := decodeAKSPayload(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: decrypted payload: %v", ErrCorrupt, path, err)
	}
	return a, nil
}

// aksKey derives the keystore.aks key for this machine and directory.
func (s *Store) aksKey(salt []byte) ([]byte, error) {
	if s.absErr != nil {
		return nil, s.absErr
	}
	idf := s.opts.MachineIdentity
	if idf == nil {
		idf = DefaultMachineIdentity
	}
	id, err := idf()
	if err != nil {
		return nil, fmt.Errorf("machine identity: %w", err)
	}
	defer clear(id)
	if len(id) == 0 {
		return nil, errors.New("machine identity: empty")
	}
	return deriveAKSKey(id, salt, s.abs)
}

// writeAKS writes keystore.aks from k. Caller holds s.mu.
func (s *Store) writeAKS(k *Keyring) error {
	var salt [saltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return fmt.Errorf("generate salt: %w", err)
	}
	key, err := s.aksKey(salt[:])
	if err != nil {
		return err
	}
	defer clear(key)
	k.r.mu.RLock()
	if k.r.wiped {
		k.r.mu.RUnlock()
		return ErrKeyringWiped
	}
	payload := encodeAKSPayload(k.r)
	k.r.mu.RUnlock()
	defer clear(payload)
	file, err := sealAKS(salt, key, payload)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(s.aksPath(), file)
}

// checkCurrent verifies that k was built from the keystore.ks now on disk.
// Caller holds s.mu.
func (s *Store) checkCurrent(k *Keyring) error {
	if k == nil || k.r == nil {
		return errors.New("keystore: nil keyring")
	}
	data, err := s.readKS()
	if err != nil {
		return err
	}
	if _, err := parseKS(s.ksPath(), data); err != nil {
		return err
	}
	if sha256.Sum256(data) != k.r.ksHash {
		return fmt.Errorf("%w (%s)", ErrStaleKeyring, s.ksPath())
	}
	return nil
}

// Rotate adds MEK generation max+1, makes it current, and rewrites
// keystore.ks sealed with the KEK held in k (no passphrase needed); then it
// rebuilds keystore.aks if it exists. It returns the new Keyring; k stays
// valid and unchanged (but can no longer be passed to Rotate or
// EnableAutoOpen: ErrStaleKeyring). With an error wrapping ErrNotDurable
// the new Keyring comes back too: keystore.ks on disk is the rotated one.
func (s *Store) Rotate(k *Keyring) (*Keyring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gens, sl, err := s.copyRingLocked(k)
	if err != nil {
		return nil, err
	}
	defer wipeMEKs(gens)
	defer clear(sl.kek)

	last := gens[len(gens)-1].number
	if last == ^uint32(0) {
		return nil, errors.New("keystore: master key generation numbers exhausted")
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	defer clear(key)
	gens = append(gens, mek{number: last + 1, created: now(), key: key})
	nk, err := s.writeKS(gens, last+1, sl)
	if nk == nil {
		return nil, err
	}
	s.rebuildAKSIfEnabled(nk)
	return nk, err
}

// copyRingLocked returns copies of k's generations and sealing (the
// caller wipes them) after checking k is the keystore's current keyring.
// Caller holds s.mu.
func (s *Store) copyRingLocked(k *Keyring) ([]mek, sealing, error) {
	if err := s.checkCurrent(k); err != nil {
		return nil, sealing{}, err
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return nil, sealing{}, ErrKeyringWiped
	}
	sl := k.r.seal
	sl.kek = bytes.Clone(sl.kek)
	return k.r.meks(), sl, nil
}

// rebuildAKSIfEnabled rewrites keystore.aks from k when it exists, unless
// it does not open here (another machine, or the directory at another
// path): like Open, it leaves that one alone, so that a rotation never
// switches auto-open on where nobody enabled it; that is reported to
// Options.Warn. A failure leaves a stale aks (detected by OpenAuto) and is
// reported to Options.Warn.
func (s *Store) rebuildAKSIfEnabled(k *Keyring) {
	a, err := s.readAKS()
	switch {
	case errors.Is(err, ErrAutoOpenDisabled):
		return
	case errors.Is(err, ErrMachineMismatch):
		s.warn(fmt.Errorf("%s left as it is, not rebuilt: it does not open here, and auto-open is switched on here only by enabling it: %w", s.aksPath(), err))
		return
	case err == nil:
		a.wipe()
	}
	// Intact, or damaged (rebuilt as before: a damaged file says nothing
	// of where it was made).
	if err := s.writeAKS(k); err != nil {
		s.warn(fmt.Errorf("rebuild %s: %w", s.aksPath(), err))
	}
}

// ChangePassphrase verifies old against keystore.ks (ErrWrongPassphrase),
// re-seals it under new with a fresh salt and the configured KDF parameters,
// and rebuilds keystore.aks if it exists. MEKs are unchanged. With an error
// wrapping ErrNotDurable the new Keyring comes back too, as from Rotate.
func (s *Store) ChangePassphrase(old, new []byte) (*Keyring, error) {
	if err := checkPassphrase(old); err != nil {
		return nil, fmt.Errorf("old passphrase: %w", err)
	}
	kdf, err := s.newPassphraseKDF(new)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.openPassphrase(old)
	if err != nil {
		return nil, err
	}
	defer k.Wipe()
	return s.resealLocked(k, new, kdf)
}

// newPassphraseKDF checks a new passphrase and returns the configured KDF
// parameters it will be sealed with.
func (s *Store) newPassphraseKDF(passphrase []byte) (KDFParams, error) {
	if err := checkPassphrase(passphrase); err != nil {
		return KDFParams{}, fmt.Errorf("new passphrase: %w", err)
	}
	kdf := s.kdf()
	if err := kdf.validate(); err != nil {
		return KDFParams{}, fmt.Errorf("keystore KDF parameters: %w", err)
	}
	return kdf, nil
}

// resealLocked writes k's MEKs to keystore.ks under a KEK derived from
// passphrase with a fresh salt, and rebuilds keystore.aks if it exists.
// s.mu must be held.
func (s *Store) resealLocked(k *Keyring, passphrase []byte, kdf KDFParams) (*Keyring, error) {
	k.r.mu.RLock()
	if k.r.wiped {
		k.r.mu.RUnlock()
		return nil, ErrKeyringWiped
	}
	gens, current := k.r.meks(), k.r.current
	k.r.mu.RUnlock()
	defer wipeMEKs(gens)
	var salt [saltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	kek := deriveKEK(passphrase, salt[:], kdf)
	defer clear(kek)
	nk, err := s.writeKS(gens, current, sealing{kdf: kdf, salt: salt, kek: kek})
	if nk == nil {
		return nil, err
	}
	s.rebuildAKSIfEnabled(nk)
	return nk, err
}

// EnableAutoOpen writes keystore.aks for this machine and directory from k,
// which must be the keyring of the keystore.ks now on disk.
func (s *Store) EnableAutoOpen(k *Keyring) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkCurrent(k); err != nil {
		return err
	}
	return s.writeAKS(k)
}

// DisableAutoOpen deletes keystore.aks (a missing file is fine).
func (s *Store) DisableAutoOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fsutil.Remove(s.aksPath())
}

// Info describes keystore.ks without opening it. It holds no secrets.
type Info struct {
	FormatVersion uint16
	KDF           KDFParams
	Size          int64
	Modified      time.Time
	AutoOpen      bool
}

// Info verifies the integrity of keystore.ks (not the passphrase) and
// describes it.
func (s *Store) Info() (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.ksPath())
	if errors.Is(err, os.ErrNotExist) {
		return Info{}, fmt.Errorf("%w: %s does not exist", ErrNotInitialized, s.ksPath())
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", s.ksPath(), err)
	}
	data, err := s.readKS()
	if err != nil {
		return Info{}, err
	}
	h, err := parseKS(s.ksPath(), data)
	if err != nil {
		return Info{}, err
	}
	aks, err := fileExists(s.aksPath())
	if err != nil {
		return Info{}, err
	}
	return Info{FormatVersion: h.version, KDF: h.kdf, Size: int64(len(data)), Modified: fi.ModTime(), AutoOpen: aks}, nil
}

func now() time.Time { return time.Unix(0, time.Now().UnixNano()).UTC() }

// ResetPassphrase re-seals the keystore under a new passphrase using the open
// keyring k instead of the old passphrase. It is for an operator who lost the
// passphrase while the keystore is still open (or still auto-opens on this
// machine): whoever holds k can already read every MEK, so this grants
// nothing new. Callers must restrict who may invoke it. With an error
// wrapping ErrNotDurable the new Keyring comes back too, as from Rotate.
func (s *Store) ResetPassphrase(k *Keyring, new []byte) (*Keyring, error) {
	kdf, err := s.newPassphraseKDF(new)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkCurrent(k); err != nil {
		return nil, err
	}
	return s.resealLocked(k, new, kdf)
}

// Merge returns a keyring holding every master key generation of rings
// (each from ImportMEKs), the newest one current. The same generation
// number with two different keys is refused as corrupt. Like ImportMEKs'
// keyrings it can unwrap but not re-seal a keystore.
func Merge(rings ...*Keyring) (*Keyring, error) {
	gens, current, err := mergeGens(rings)
	if err != nil {
		return nil, err
	}
	defer wipeMEKs(gens)
	return newKeyring(gens, current, sealing{}, [sha256.Size]byte{})
}

// mergeGens returns copies of the union of rings' generations (wipe them).
func mergeGens(rings []*Keyring) ([]mek, uint32, error) {
	byNum := map[uint32]mek{}
	var all [][]mek
	fail := func(err error) ([]mek, uint32, error) {
		for _, g := range all {
			wipeMEKs(g)
		}
		return nil, 0, err
	}
	for _, k := range rings {
		if k == nil || k.r == nil {
			continue
		}
		k.r.mu.RLock()
		if k.r.wiped {
			k.r.mu.RUnlock()
			return fail(errors.New("keystore: merge of a wiped keyring"))
		}
		gens := k.r.meks()
		k.r.mu.RUnlock()
		all = append(all, gens)
		for _, g := range gens {
			if old, ok := byNum[g.number]; ok {
				if !bytes.Equal(old.key, g.key) {
					return fail(fmt.Errorf("%w: master key generation %d differs between backups (they come from different keystores)", ErrCorrupt, g.number))
				}
				continue
			}
			byNum[g.number] = g
		}
	}
	if len(byNum) == 0 {
		return fail(errors.New("keystore: no master key generation to merge"))
	}
	out := make([]mek, 0, len(byNum))
	var current uint32
	for _, g := range byNum {
		out = append(out, mek{number: g.number, created: g.created, key: bytes.Clone(g.key)})
		current = max(current, g.number)
	}
	for _, g := range all {
		wipeMEKs(g)
	}
	slices.SortFunc(out, func(a, b mek) int { return cmp.Compare(a.number, b.number) })
	return out, current, nil
}

// InitFrom creates a keystore sealed under passphrase that holds every
// master key generation of rings (imported from backups with ImportMEKs),
// the newest one current. It is how a restore gives the restored node its
// own keystore: the generations come from the backups, the passphrase from
// the operator; no auto-open file is made. With an error wrapping
// ErrNotDurable the new Keyring comes back too (keystore.ks is in place).
func (s *Store) InitFrom(passphrase []byte, rings ...*Keyring) (*Keyring, error) {
	if err := checkPassphrase(passphrase); err != nil {
		return nil, err
	}
	kdf := s.kdf()
	if err := kdf.validate(); err != nil {
		return nil, fmt.Errorf("keystore KDF parameters: %w", err)
	}
	gens, current, err := mergeGens(rings)
	if err != nil {
		return nil, err
	}
	defer wipeMEKs(gens)
	return s.create(passphrase, kdf, gens, current)
}

// WrappedGen is one master key generation wrapped under an earlier one, as
// a cluster replicates a rotation to the other nodes' keystores.
type WrappedGen struct {
	Gen     uint32 `json:"generation"`
	Under   uint32 `json:"under"`
	Wrapped []byte `json:"wrapped"`
}

func genAAD(gen uint32) []byte { return fmt.Appendf(nil, "coffer master key generation %d", gen) }

// WrapGeneration wraps generation gen's key under generation under (both
// held by k), for the other nodes of a cluster.
func (k *Keyring) WrapGeneration(gen, under uint32) (WrappedGen, error) {
	if k == nil || k.r == nil {
		return WrappedGen{}, errors.New("keystore: wrap with an empty keyring")
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return WrappedGen{}, ErrKeyringWiped
	}
	g, u := k.r.find(gen), k.r.find(under)
	if g == nil || u == nil {
		return WrappedGen{}, fmt.Errorf("%w: %d or %d", ErrUnknownGeneration, gen, under)
	}
	out := make([]byte, nonceSize, nonceSize+keySize+tagSize)
	if _, err := rand.Read(out); err != nil {
		return WrappedGen{}, err
	}
	return WrappedGen{Gen: gen, Under: under, Wrapped: u.aead.Seal(out, out[:nonceSize], g.key, genAAD(gen))}, nil
}

// NewGeneration makes a new master key (the next generation number) and
// returns it wrapped under the current generation, without storing it: a
// cluster commits it first, then every node adds it with AddGenerations.
func (k *Keyring) NewGeneration() (WrappedGen, error) {
	if k == nil || k.r == nil {
		return WrappedGen{}, errors.New("keystore: new generation of an empty keyring")
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return WrappedGen{}, ErrKeyringWiped
	}
	cur := k.r.find(k.r.current)
	last := k.r.gens[len(k.r.gens)-1].number
	if last == ^uint32(0) {
		return WrappedGen{}, errors.New("keystore: master key generation numbers exhausted")
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return WrappedGen{}, fmt.Errorf("generate master key: %w", err)
	}
	defer clear(key)
	out := make([]byte, nonceSize, nonceSize+keySize+tagSize)
	if _, err := rand.Read(out); err != nil {
		return WrappedGen{}, err
	}
	return WrappedGen{Gen: last + 1, Under: cur.number, Wrapped: cur.aead.Seal(out, out[:nonceSize], key, genAAD(last+1))}, nil
}

// AddGenerations adds to the keystore the generations of ws it lacks
// (each unwrapped with an earlier generation it has, in order), re-seals
// keystore.ks under its current passphrase and rebuilds keystore.aks if
// it exists. It returns the new Keyring, or k itself if nothing was added;
// with an error wrapping ErrNotDurable it returns the new Keyring too.
func (s *Store) AddGenerations(k *Keyring, ws []WrappedGen) (*Keyring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gens, sl, err := s.copyRingLocked(k)
	if err != nil {
		return nil, err
	}
	defer wipeMEKs(gens)
	defer clear(sl.kek)
	slices.SortFunc(ws, func(a, b WrappedGen) int { return cmp.Compare(a.Gen, b.Gen) })
	added := false
	for _, w := range ws {
		if slices.ContainsFunc(gens, func(m mek) bool { return m.number == w.Gen }) {
			continue
		}
		i := slices.IndexFunc(gens, func(m mek) bool { return m.number == w.Under })
		if i < 0 || len(w.Wrapped) < nonceSize+tagSize {
			return nil, fmt.Errorf("%w: generation %d is wrapped under %d, which this keystore lacks", ErrUnknownGeneration, w.Gen, w.Under)
		}
		a, err := newGCM(gens[i].key)
		if err != nil {
			return nil, err
		}
		key, err := a.Open(nil, w.Wrapped[:nonceSize], w.Wrapped[nonceSize:], genAAD(w.Gen))
		if err != nil || len(key) != keySize {
			return nil, fmt.Errorf("%w (generation %d under %d)", ErrUnwrap, w.Gen, w.Under)
		}
		gens = append(gens, mek{number: w.Gen, created: now(), key: key})
		added = true
	}
	if !added {
		return k, nil
	}
	slices.SortFunc(gens, func(a, b mek) int { return cmp.Compare(a.number, b.number) })
	nk, err := s.writeKS(gens, gens[len(gens)-1].number, sl)
	if nk == nil {
		return nil, err
	}
	s.rebuildAKSIfEnabled(nk)
	return nk, err
}
