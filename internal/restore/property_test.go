package restore_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/service"
)

// point is the state as it was right after one operation.
type point struct {
	index  uint64
	digest string
	at     time.Time // after the operation returned, before the next began
	op     string
}

// TestPropertyRestoreMatchesHistory runs a random sequence of operations
// (create, rotate, state changes, destroy, wallets and grants, restore
// points, data and master key rotations, keystore and recovery passphrase
// changes) with full and incremental backups and journal segment rotations
// in between, recording the state digest after each one. Then, for many
// random targets (indexes, times, restore points, latest), it restores and
// requires the restored digest to equal the one recorded at that exact
// point. COFFER_PROPERTY_SEED replays a seed; COFFER_PROPERTY_OPS sets the
// length.
func TestPropertyRestoreMatchesHistory(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("COFFER_PROPERTY_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	ops := 160
	if v := os.Getenv("COFFER_PROPERTY_OPS"); v != "" {
		ops, _ = strconv.Atoi(v)
	}
	t.Logf("seed %d (COFFER_PROPERTY_SEED=%d to replay), %d operations", seed, seed, ops)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	e := newEnv(t, true)
	ctx := e.ctx
	recovery := []string{rcPass}
	keystorePass := ksPass

	var history []point
	var ids []string
	points := map[string]int{} // restore point name -> history position
	record := func(op string) {
		idx, d := e.digest()
		history = append(history, point{index: idx, digest: d, at: time.Now(), op: op})
		// Distinct command times on either side of the recorded instant.
		// Real time must pass: backups and their manifests take the wall
		// clock, not the service's Config.Now.
		time.Sleep(2 * time.Millisecond)
	}
	e.backup("full")
	record("full")
	wallets := []string{service.DefaultWallet}
	for i := 0; i < ops; i++ {
		var op string
		switch r := rng.IntN(100); {
		case r < 30 || len(ids) == 0:
			w := wallets[rng.IntN(len(wallets))]
			o, err := e.s.Objects.CreateObject(ctx, service.CreateObject{Wallet: w, Name: fmt.Sprintf("k%d", i), Type: service.TypeSymmetricKey})
			e.must(o, err)
			ids = append(ids, o.ID)
			op = "create"
		case r < 45:
			id := ids[rng.IntN(len(ids))]
			_, err := e.s.Objects.RotateObject(ctx, service.Ref{ID: id}, nil)
			op = "rotate" // refused for deactivated or destroyed objects: also history
			_ = err
		case r < 52:
			id := ids[rng.IntN(len(ids))]
			tr := []service.Transition{service.Deactivate, service.Revoke, service.Destroy, service.Activate}[rng.IntN(4)]
			e.s.Objects.ChangeState(ctx, service.Ref{ID: id}, tr, "property test")
			op = "state " + string(tr)
		case r < 56:
			name := fmt.Sprintf("w%d", i)
			_, err := e.s.Access.CreateWallet(ctx, name, "")
			e.must(nil, err)
			wallets = append(wallets, name)
			op = "wallet"
		case r < 59:
			e.s.Objects.SetAttributes(ctx, service.Ref{ID: ids[rng.IntN(len(ids))]}, map[string]string{"owner": fmt.Sprint(i)}, nil)
			op = "attributes"
		case r < 65:
			name := fmt.Sprintf("rp%d", i)
			_, err := e.s.Backups.CreateRestorePoint(ctx, name)
			e.must(nil, err)
			points[name] = len(history)
			op = "restore point"
		case r < 73:
			e.archive()
			op = "rotate+archive"
		case r < 80:
			e.backup("incremental")
			op = "incremental"
		case r < 83:
			e.backup("full")
			op = "full"
		case r < 86:
			_, err := e.s.RotateDataKey(ctx)
			e.must(nil, err)
			op = "data key rotation"
		case r < 88:
			_, err := e.s.RotateMasterKey(ctx)
			e.must(nil, err)
			// As the service's automatic backup after a key change does.
			e.backup("full")
			op = "master key rotation + full"
		case r < 90:
			np := fmt.Sprintf("keystore-passphrase-%d", i)
			e.must(nil, e.s.ChangePassphrase(ctx, []byte(keystorePass), []byte(np)))
			keystorePass = np
			op = "keystore passphrase change"
		case r < 92:
			np := fmt.Sprintf("recovery-passphrase-%d", i)
			_, err := e.s.SetRecoveryPassphrase(ctx, []byte(recovery[len(recovery)-1]), []byte(np))
			e.must(nil, err)
			recovery = append(recovery, np)
			e.backup("full")
			op = "recovery passphrase change + full"
		default:
			e.put(fmt.Sprintf("s%d", rng.IntN(8)), fmt.Sprint(i))
			op = "secret"
		}
		record(op)
	}
	e.archive()
	// The archive marks written by the last shipping are not archived: the
	// latest restorable point is the last one recorded before them.
	last := history[len(history)-1]
	keys := make([]bundle.Decryption, len(recovery))
	for i, p := range recovery {
		keys[i] = bundle.Decryption{Passphrase: []byte(p)}
	}
	withKeys := func(o *restore.Options) { o.Keys = keys }

	check := func(what string, tg Target, want point) {
		t.Helper()
		sum, _, err := e.restoreTo(tg, withKeys)
		if err != nil {
			t.Fatalf("%s (after %q): %v", what, want.op, err)
		}
		if sum.Index != want.index || sum.Digest != want.digest {
			t.Fatalf("%s (after %q): restored index %d digest %.12s, recorded index %d digest %.12s", what, want.op, sum.Index, sum.Digest, want.index, want.digest)
		}
	}
	check("latest", Target{}, last)
	for n := 0; n < 4; n++ {
		p := history[rng.IntN(len(history))]
		check(fmt.Sprintf("index %d", p.index), Target{Index: p.index}, p)
	}
	// A time target needs a later record in the archive to prove nothing
	// else happened before it (a time after the last archived record is
	// refused: see TestTimeTargetNeedsTheRecordsBeforeIt).
	var timed []point
	for _, p := range history {
		if p.index < last.index {
			timed = append(timed, p)
		}
	}
	for n := 0; n < 4 && len(timed) > 0; n++ {
		p := timed[rng.IntN(len(timed))]
		check(fmt.Sprintf("time %s", p.at.Format(time.RFC3339Nano)), Target{Time: p.at}, p)
	}
	if _, _, err := e.restoreTo(Target{Time: last.at.Add(time.Hour)}, withKeys); !errors.Is(err, restore.ErrGap) {
		t.Fatalf("a time after the last archived record: %v", err)
	}
	n := 0
	for name, pos := range points {
		if n++; n > 3 {
			break
		}
		check("restore point "+name, Target{Point: name}, history[pos])
	}
}
