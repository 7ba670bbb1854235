// Package check is Coffer's offline integrity check of a data dir (like
// etcdutl, kept apart from the network commands): bbolt consistency, the
// data keys unwrap, every stored secret decrypts and authenticates, the
// journal verifies and is contiguous, and the applied index agrees with the
// raft log. It needs the keystore (passphrase or auto-open), never a
// running server: the caller holds the data dir's lock.
package check

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
)

// Paths of a data dir the check reads.
type Paths struct {
	State, Raft, Journal string
}

// Result of one check.
type Result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is the whole check; OK only when every check passed.
type Report struct {
	OK      bool     `json:"ok"`
	Results []Result `json:"results"`
}

func (r *Report) add(name string, err error, detail string) {
	res := Result{Name: name, OK: err == nil, Detail: detail}
	if err != nil {
		res.Detail = err.Error()
	}
	r.Results = append(r.Results, res)
}

// Run checks the data dir with the opened keyring.
func Run(p Paths, ring *keystore.Keyring) Report {
	var rep Report
	if _, err := os.Stat(p.State); err != nil {
		rep.add("state database", fmt.Errorf("state database %s: %w (restore the data dir, or see the runbook for a lost state.db)", p.State, err), "")
		return rep.done()
	}
	st, err := state.Open(p.State, state.Options{})
	if err != nil {
		rep.add("state database", err, "")
		return rep.done()
	}
	defer st.Close()

	// 1. bbolt's own consistency check.
	if errs := st.CheckConsistency(5); len(errs) > 0 {
		rep.add("state database", fmt.Errorf("bbolt consistency: %v (first of the problems found)", errs[0]), "")
	} else {
		rep.add("state database", nil, fmt.Sprintf("pages consistent; applied index %d", st.AppliedIndex()))
	}

	// 2. The data keys unwrap under the keystore's master keys.
	bar := barrier.New()
	keys, current, err := st.DEKs()
	if err == nil {
		err = bar.Unseal(ring, keys, current)
	}
	if err != nil {
		rep.add("data keys", fmt.Errorf("unwrap data keys: %w", err), "")
		return rep.done()
	}
	rep.add("data keys", nil, fmt.Sprintf("%d data keys unwrap (current %d)", len(keys), current))

	// 3. Every object version's material decrypts and authenticates.
	objects, versions := 0, 0
	var bad error
	err = st.Objects("", func(o state.Object) bool {
		objects++
		for _, v := range o.Versions {
			if v.Destroyed {
				continue
			}
			sealed, err := st.Material(o.ID, v.Version)
			if err == nil {
				var pt []byte
				pt, err = bar.DecryptValue(o.ID, v.Version, sealed)
				clear(pt)
			}
			if err != nil {
				bad = fmt.Errorf("object %s (%s/%s) version %d: %w", o.ID, o.Wallet, o.Name, v.Version, err)
				return false
			}
			versions++
		}
		return true
	})
	if err == nil {
		err = bad
	}
	if err == nil {
		err = st.EachSealed(func(what, id string, version uint64, sealed []byte) error {
			pt, err := bar.DecryptValue(id, version, sealed)
			clear(pt)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		})
	}
	rep.add("secrets", err, fmt.Sprintf("%d objects, %d versions decrypt and authenticate", objects, versions))

	// 4. The journal verifies: framing, checksums, encryption, and no gap.
	// Records missing between two segments (one moved aside) are what the
	// next open rebuilds from the raft log, or refuses to open over: the
	// check says which, as the open would.
	var last, records uint64
	gap := error(nil)
	raftFirst, raftErr := raftFirstIndex(p.Raft)
	var rebuilds []string
	onGap := func(g journal.Gap) error {
		if raftErr != nil {
			return fmt.Errorf("records %d-%d are missing between segments %s and %s; whether the raft log still holds them is unknown: %w", g.From, g.To, g.Prev, g.Next, raftErr)
		}
		ok, msg := g.Advice(raftFirst)
		if !ok {
			return errors.New(msg + "; the next open refuses until then")
		}
		rebuilds = append(rebuilds, msg)
		last = g.To
		return nil
	}
	jerr := journal.ReadAcrossGaps(p.Journal, bar, onGap, func(seg journal.SegmentInfo, r journal.Record) error {
		if last != 0 && r.Index != last+1 && gap == nil {
			gap = fmt.Errorf("segment %s: record %d follows %d: records %d-%d are missing", seg.Name, r.Index, last, last+1, r.Index-1)
		}
		last = r.Index
		records++
		return nil
	})
	if records == 0 && jerr == nil {
		// No record yet (a restored data dir before its first write):
		// the journal ends where it continues from, not at 0.
		if segs, err := journal.ListSegments(p.Journal); err == nil && len(segs) > 0 {
			last = segs[len(segs)-1].Prev
		}
	}
	switch {
	case errors.Is(jerr, fs.ErrNotExist):
		rep.add("journal", nil, "no journal yet")
	case jerr != nil:
		var ce *journal.CorruptError
		switch {
		case errors.As(jerr, &ce) && ce.Torn:
			rep.add("journal", nil, fmt.Sprintf("%d records verify; %v: a torn final record, which the next open truncates", records, jerr))
		case errors.As(jerr, &ce) && journal.CheckOpen(p.Journal) == nil:
			rep.add("journal", fmt.Errorf("%w; the next open does not read this part of a closed segment and opens, but backups and restores that need it fail: with the server stopped, move %s aside and check again (its records are rebuilt from the raft log if it still holds them)", jerr, ce.File), "")
		case ce != nil:
			rep.add("journal", fmt.Errorf("%w; the next open refuses: with the server stopped, move %s aside and check again (its records are rebuilt from the raft log if it still holds them)", jerr, ce.File), "")
		default:
			rep.add("journal", jerr, "")
		}
	case gap != nil:
		rep.add("journal", gap, "")
	default:
		detail := fmt.Sprintf("%d records verify, last index %d", records, last)
		for _, m := range rebuilds {
			detail += "; " + m + ": the next open rebuilds them"
		}
		rep.add("journal", nil, detail)
	}

	// 5. The applied index is within what the raft log (and its snapshot) holds.
	if _, err := os.Stat(p.Raft); err != nil {
		rep.add("raft log", fmt.Errorf("raft directory %s: %w (the raft directory is older than the state: lost)", p.Raft, err), "")
		return rep.done()
	}
	node, err := cluster.Open(cluster.Config{Dir: p.Raft, NodeID: "check", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		rep.add("raft log", err, "")
		return rep.done()
	}
	defer node.Close()
	lastLog, _ := node.LastIndex()
	snap, _ := node.SnapshotIndex()
	applied := st.AppliedIndex()
	switch {
	case applied > max(lastLog, snap):
		rep.add("raft log", fmt.Errorf("the state has applied index %d but the raft log ends at %d (snapshot %d): the raft directory is older than the state", applied, lastLog, snap), "")
	case last > max(lastLog, snap):
		rep.add("raft log", fmt.Errorf("the journal reaches index %d beyond the raft log (%d): the raft directory is older than the journal", last, lastLog), "")
	default:
		first, _ := node.FirstIndex()
		detail := fmt.Sprintf("raft log to %d (snapshot %d) covers the applied index %d", lastLog, snap, applied)
		switch {
		case last < applied && first > 0 && first > last+1:
			rep.add("raft log", fmt.Errorf("the journal ends at %d but the raft log starts at %d: records %d-%d can no longer be rebuilt into the journal", last, first, last+1, first-1), "")
			return rep.done()
		case last < applied:
			detail += fmt.Sprintf("; the journal lags the state by %d records (rebuilt from the raft log at the next open)", applied-last)
		}
		rep.add("raft log", nil, detail)
	}
	return rep.done()
}

// raftFirstIndex is the first entry of the raft log in dir (0: empty).
func raftFirstIndex(dir string) (uint64, error) {
	if _, err := os.Stat(dir); err != nil {
		return 0, fmt.Errorf("raft directory %s: %w", dir, err)
	}
	node, err := cluster.Open(cluster.Config{Dir: dir, NodeID: "check", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, err
	}
	defer node.Close()
	return node.FirstIndex()
}

func (r Report) done() Report {
	r.OK = true
	for _, res := range r.Results {
		r.OK = r.OK && res.OK
	}
	return r
}
