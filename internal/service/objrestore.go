package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/state"
)

// RestoreObjectRequest asks for one object as it was at a past point.
type RestoreObjectRequest struct {
	Destination string    `json:"destination" doc:"the backup destination to read"`
	Time        time.Time `json:"time,omitzero" doc:"the object as it was at this time (RFC 3339)"`
	Index       uint64    `json:"index,omitempty" doc:"or: as it was at this raft index"`
	As          string    `json:"as,omitempty" doc:"restore as a new object with this name (same wallet); empty: put the lost versions back into the object itself"`
}

// RestoreObject reads the backups on a destination as of a past time (or
// index) and puts one object back through the normal command path: its
// versions as they were then, e.g. to undo a mistaken destroy. In place
// (no As) the object regains the material of the versions it has lost and,
// if destroyed, the state it had; with As a new object is created in the
// same wallet. Key administrators and endpoints with manage on the wallet.
func (s *Backups) RestoreObject(ctx context.Context, ref Ref, req RestoreObjectRequest) (Object, error) {
	var out Object
	err := s.objectRestore(ctx, ref, req, func(live state.Object, c state.ObjectRestore) error {
		res, err := s.applyResult(ctx, state.TypeObjectRestore, c)
		if err != nil {
			return fmt.Errorf("restore object %s: %w", live.ID, err)
		}
		note(ctx, c.Object.ID)
		s.log.Info("object restored from a backup", "object", live.ID, "as", c.Object.ID, "from", c.From, "versions", len(c.Materials))
		out, err = confirmObject(res)
		return err
	})
	return out, err
}

// RestorePreview is what an object restore would do: the object as it
// would leave it, and which of its versions get their material back.
type RestorePreview struct {
	Object   Object   `json:"object" doc:"the object as the restore would leave it"`
	Restored []uint64 `json:"restored_versions" doc:"the versions whose material comes back"`
	From     string   `json:"from" doc:"the destination and point read"`
}

// PreviewObjectRestore is RestoreObject without the write: it reads the
// same backups, builds the same command and plans it against the current
// state as the state machine would apply it, and changes nothing. Same
// permission as the restore.
func (s *Backups) PreviewObjectRestore(ctx context.Context, ref Ref, req RestoreObjectRequest) (RestorePreview, error) {
	var out RestorePreview
	err := s.objectRestore(ctx, ref, req, func(live state.Object, c state.ObjectRestore) error {
		o, restored, refused, err := s.st.PreviewObjectRestore(s.now(), c)
		switch {
		case err != nil:
			return fmt.Errorf("preview the restore of object %s: %w", live.ID, err)
		case refused != nil:
			return fmt.Errorf("restore object %s: %w", live.ID, mapStateErr(refused))
		}
		note(ctx, c.Object.ID)
		out = RestorePreview{Object: objectOf(o), Restored: restored, From: c.From}
		return nil
	})
	return out, err
}

// objectRestore reads the object from the backups and builds the restore
// command, then hands it to apply (under the read lock of the open
// keystore).
func (s *Backups) objectRestore(ctx context.Context, ref Ref, req RestoreObjectRequest, apply func(live state.Object, c state.ObjectRestore) error) error {
	if req.Destination == "" {
		return fmt.Errorf("%w: destination is required", ErrInvalid)
	}
	if req.Time.IsZero() == (req.Index == 0) {
		return fmt.Errorf("%w: give exactly one of time and index", ErrInvalid)
	}
	if req.As != "" {
		if err := ValidName(req.As); err != nil {
			return err
		}
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	live, err := s.svc.Objects.lookup(ref)
	if err != nil {
		return err
	}
	if _, err := s.svc.Objects.authorizeObject(ctx, ref, live, PermManage, "restoring an object from a backup"); err != nil {
		return err
	}
	t, err := backupHost{s}.OpenTarget(ctx, req.Destination)
	if err != nil {
		return err
	}
	defer t.Dest.Close()
	var keys []bundle.Decryption
	if len(t.Encryption.Passphrase) > 0 {
		keys = append(keys, bundle.Decryption{Passphrase: t.Encryption.Passphrase})
	} else {
		return fmt.Errorf("%w: backups on %s are encrypted to age recipients; the server has no identity to read them: restore the whole node offline (coffer restore --identity)", ErrConflict, req.Destination)
	}
	tmp := filepath.Join(datadir.RestoreTmpDir(s.cfg.DataDir), randHex(6))
	if err := fsutil.EnsureDir(tmp); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// Read the object, decrypted, from the restored history.
	var then state.Object
	plain := map[uint64][]byte{}
	defer func() {
		for _, p := range plain {
			clear(p)
		}
	}()
	target := restore.Target{Time: req.Time, Index: req.Index}
	tl := s.st.Timeline() // this node's own history, not the newest on the destination
	if tl.History == nil {
		tl.History = []state.TimelineBranch{}
	}
	_, err = restore.Run(ctx, restore.Options{From: t.Dest, Keys: keys, DataDir: tmp, Target: target,
		Timeline: tl.ID, History: tl.History,
		Inspect: func(st *state.Store, bar *barrier.Barrier) error {
			o, err := st.Object(live.ID)
			if err != nil {
				return fmt.Errorf("object %s did not exist at %s: %w", live.ID, target, err)
			}
			then = o
			for _, v := range o.Versions {
				if v.Destroyed {
					continue
				}
				sealed, err := st.Material(o.ID, v.Version)
				if err != nil {
					return err
				}
				p, err := bar.DecryptValue(o.ID, v.Version, sealed)
				if err != nil {
					return fmt.Errorf("object %s version %d in the backup: %w", o.ID, v.Version, err)
				}
				plain[v.Version] = p
			}
			return nil
		}})
	if err != nil {
		switch {
		case errors.Is(err, state.ErrNotFound):
			return fmt.Errorf("%w: %v", ErrNotFound, err)
		case errors.Is(err, restore.ErrNoBackup), errors.Is(err, restore.ErrGap), errors.Is(err, restore.ErrNotOnTimeline):
			// The operator's target is out of what the backups hold: a 4xx
			// that says what to choose, wrapping the restore's reason.
			return fmt.Errorf("%w: the backups on %s cannot reach %s: %w; choose a time or index they cover (coffer backup list --destination %s), or run journal archive now for the newest records",
				ErrInvalid, req.Destination, target, err, req.Destination)
		case errors.Is(err, bundle.ErrWrongKey):
			return fmt.Errorf("%w: a backup on %s does not open with the current recovery passphrase (it was taken under an earlier one): restore the whole node offline with that passphrase (coffer restore --recovery-passphrase-file), then copy the object: %w",
				ErrConflict, req.Destination, err)
		}
		return fmt.Errorf("read the backups on %s as of %s: %w", req.Destination, target, err)
	}
	if len(plain) == 0 {
		return fmt.Errorf("%w: object %s had no version with material at %s (it was destroyed then)", ErrConflict, live.ID, target)
	}

	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	c := state.ObjectRestore{Object: then, InPlace: req.As == "", Materials: map[uint64][]byte{},
		From: fmt.Sprintf("%s as of %s", req.Destination, target)}
	if req.As != "" {
		c.Object.ID, c.Object.Name = newUUID(), req.As
	}
	for v, p := range plain {
		sealed, err := s.bar.EncryptValue(c.Object.ID, v, p)
		if err != nil {
			return err
		}
		c.Materials[v] = sealed
	}
	return apply(live, c)
}

// VerifyResult is the outcome of verifying one backup.
type VerifyResult struct {
	ID     string    `json:"id"`
	Kind   string    `json:"kind"`
	File   string    `json:"file"`
	Result string    `json:"result" doc:"OK, FAILED, SKIPPED (taken under an earlier recovery passphrase) or PRUNED (removed by retention while it was verified)"`
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// VerifyRequest picks the backups to verify on a destination.
type VerifyRequest struct {
	ID  string `json:"id,omitempty" doc:"a backup id (or an archived segment's file name)"`
	All bool   `json:"all,omitempty" doc:"every backup and archived segment on the destination"`
	// Progress, when set, is told when each backup starts and ends.
	Progress func(VerifyProgress) `json:"-"`
}

// VerifyProgress is one step of a verification: File is being verified
// (Result empty) or was (Result set); Done of Total are finished.
type VerifyProgress struct {
	Done   int    `json:"done"`
	Total  int    `json:"total"`
	File   string `json:"file"`
	Result string `json:"result,omitempty"`
}

// VerifyBackups proves backups on a destination restorable (see
// restore.Verify) and records OK or FAILED with the reason in the
// destination's catalog (when this node's timeline is the one that writes
// there). System administrators.
func (s *Backups) VerifyBackups(ctx context.Context, destination string, req VerifyRequest) ([]VerifyResult, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "verifying backups"); err != nil {
		return nil, err
	}
	if req.All == (req.ID != "") {
		return nil, fmt.Errorf("%w: give a backup id or all", ErrInvalid)
	}
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	t, err := backupHost{s}.OpenTarget(ctx, destination)
	if err != nil {
		return nil, err
	}
	defer t.Dest.Close()
	if len(t.Encryption.Passphrase) == 0 {
		return nil, fmt.Errorf("%w: backups on %s are encrypted to age recipients; the server has no identity to read them", ErrConflict, destination)
	}
	keys := []bundle.Decryption{{Passphrase: t.Encryption.Passphrase}}
	cat, err := t.LoadCatalog(ctx)
	if err != nil {
		return nil, err
	}
	var todo []backup.Entry
	for _, e := range cat.Entries {
		if req.All || e.ID == req.ID || path.Base(e.File) == req.ID || e.File == req.ID {
			todo = append(todo, e)
		}
	}
	if len(todo) == 0 {
		return nil, fmt.Errorf("%w: backup %q is not in the catalog of %s", ErrNotFound, req.ID, destination)
	}
	work := datadir.RestoreTmpDir(s.cfg.DataDir)
	if err := fsutil.EnsureDir(work); err != nil {
		return nil, err
	}
	// Only the timeline that writes to the destination records results in
	// its catalog: a held restored copy (a rehearsal) or another timeline
	// verifies, and writes nothing there.
	w := cat.WriterTimeline()
	record := s.heldErr(destination) == nil && (w == 0 || w == s.st.Timeline().ID)
	var out []VerifyResult
	progress := req.Progress
	if progress == nil {
		progress = func(VerifyProgress) {}
	}
	for i, e := range todo {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		progress(VerifyProgress{Done: i, Total: len(todo), File: e.File})
		v := backup.Verification{Time: time.Now().UTC(), Result: "OK"}
		if err := restore.Verify(ctx, t.Dest, cat, e, keys, work); errors.Is(err, bundle.ErrWrongKey) {
			// Not a damaged backup: one taken under an earlier recovery
			// passphrase, which the server no longer holds.
			v.Result = "SKIPPED"
			v.Reason = fmt.Sprintf("encrypted to %v; the server holds %s only: verify it offline (coffer restore into a scratch dir with that passphrase)",
				e.Recipients, "passphrase:"+t.Encryption.Label)
		} else if err != nil {
			v.Result, v.Reason = "FAILED", err.Error()
			if prunedMeanwhile(ctx, t, cat, e) {
				v.Result, v.Reason = "PRUNED", prunedReason
			}
		}
		switch {
		case v.Result == "PRUNED": // no longer in the catalog: nothing to record
		case record:
			if err := s.recordVerification(ctx, t, destination, e.File, v); err != nil {
				if !prunedMeanwhile(ctx, t, cat, e) {
					return out, err
				}
				// Verified, then removed by retention (the record waited
				// for the backup that pruned it): nothing to record.
				v.Result, v.Reason = "PRUNED", prunedReason
			}
		default:
			s.drills.verified(destination, e.File, v)
		}
		s.log.Info("backup verified", "destination", destination, "file", e.File, "result", v.Result, "reason", v.Reason)
		out = append(out, VerifyResult{ID: e.ID, Kind: e.Kind, File: e.File, Result: v.Result, Reason: v.Reason, Time: v.Time})
		progress(VerifyProgress{Done: i + 1, Total: len(todo), File: e.File, Result: v.Result})
	}
	return out, nil
}

// prunedReason is the reason of a PRUNED verification.
const prunedReason = "removed from the destination (retention) while it was verified: not a damaged backup"

// prunedMeanwhile reports whether e, or the full an incremental e builds
// on, was in the catalog before (cat, read when the verification began)
// and is no longer in the destination's catalog (retention removed it
// while it was verified). A full already missing from before is a broken
// chain, not one pruned meanwhile.
func prunedMeanwhile(ctx context.Context, t *backup.Target, before backup.Catalog, e backup.Entry) bool {
	after, err := t.LoadCatalog(ctx)
	if err != nil {
		return false
	}
	isFull := func(x backup.Entry) bool {
		return x.ID == e.BaseFullID && (x.Kind == backup.KindFull || x.Kind == backup.KindDump)
	}
	if e.Kind == backup.KindIncremental && slices.ContainsFunc(before.Entries, isFull) && !slices.ContainsFunc(after.Entries, isFull) {
		return true
	}
	return !slices.ContainsFunc(after.Entries, func(x backup.Entry) bool { return x.File == e.File })
}

// recordVerification writes a result into the catalog while no backup
// writes it.
func (s *Backups) recordVerification(ctx context.Context, t *backup.Target, destination, file string, v backup.Verification) error {
	s.mu.RLock()
	m := s.backups
	s.mu.RUnlock()
	rec := func() error {
		if err := restore.Record(ctx, t.Dest, file, v); err != nil {
			return err
		}
		// Under the same lock as the catalog's write: a rebuild of the
		// catalog does not come between the two.
		s.drills.verified(destination, file, v)
		return nil
	}
	if m == nil {
		return rec()
	}
	return m.Exclusive(rec)
}

// verifyAfter verifies a backup a schedule just took (Schedule.Verify).
func (s *Backups) verifyAfter(ctx context.Context, destination, file string) error {
	res, err := s.VerifyBackups(WithIdentity(ctx, LocalRoot()), destination, VerifyRequest{ID: file})
	if err != nil {
		return err
	}
	if len(res) == 1 && res[0].Result != "OK" {
		return errors.New(res[0].Reason)
	}
	return nil
}
