package service

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-kms/coffer/internal/datadir"
)

// Disk-use thresholds of status, the console and destination listings.
const (
	DiskWarnPercent  = 80 // at or above: level "warning"
	DiskErrorPercent = 95 // at or above: level "error"
)

// Disk-use levels.
const (
	DiskOK      = "ok"
	DiskWarning = "warning"
	DiskError   = "error"
)

// DiskLevel is the level of a used percentage: ok, warning (80 %) or error
// (95 %).
func DiskLevel(usedPercent float64) string {
	switch {
	case usedPercent >= DiskErrorPercent:
		return DiskError
	case usedPercent >= DiskWarnPercent:
		return DiskWarning
	}
	return DiskOK
}

// DiskUse is the use of the filesystem holding one directory this node
// writes. Two directories on one filesystem show the same figures.
type DiskUse struct {
	What        string  `json:"what" doc:"data, journal, mirror, or destination:NAME (a LOCAL or dir destination)"`
	Path        string  `json:"path"`
	Total       uint64  `json:"total_bytes,omitempty"`
	Free        uint64  `json:"free_bytes,omitempty" doc:"available to the server"`
	UsedPercent float64 `json:"used_percent"`
	Level       string  `json:"level" doc:"ok, warning (at or above 80 % used), error (at or above 95 %), or unknown (statfs failed: see error)"`
	Error       string  `json:"error,omitempty"`
}

// osStatfs is statfs(2): the filesystem's size and the bytes available to
// an unprivileged user.
func osStatfs(path string) (total, free uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize) // #nosec G115 -- the block size statfs reports is positive
	return st.Blocks * bs, st.Bavail * bs, nil
}

func (s *core) statfsNow(path string) (total, free uint64, err error) {
	if s.cfg.Statfs != nil {
		return s.cfg.Statfs(path)
	}
	return osStatfs(path)
}

// statfsWait is how long a status waits for one statfs: a hung network
// mount (an NFS mirror or destination whose server is gone) blocks statfs
// for as long as the mount hangs, and status, metrics and the console must
// go on answering.
const statfsWait = 2 * time.Second

// statfsProbe is one statfs in flight.
type statfsProbe struct {
	done        chan struct{}
	started     time.Time
	total, free uint64
	err         error
}

// statfsGate keeps one statfs in flight per path: while a hung one has not
// returned, later calls wait for the same one (at most statfsWait) instead
// of starting another that would hang too.
type statfsGate struct {
	mu       sync.Mutex
	inflight map[string]*statfsProbe
}

// statfs measures the filesystem of path, giving up after statfsWait with
// an error that says the filesystem does not answer.
func (s *core) statfs(path string) (total, free uint64, err error) {
	g := &s.statfsGate
	g.mu.Lock()
	p := g.inflight[path]
	if p == nil {
		if g.inflight == nil {
			g.inflight = map[string]*statfsProbe{}
		}
		p = &statfsProbe{done: make(chan struct{}), started: time.Now()}
		g.inflight[path] = p
		go func() {
			p.total, p.free, p.err = s.statfsNow(path)
			g.mu.Lock()
			delete(g.inflight, path)
			g.mu.Unlock()
			close(p.done)
		}()
	}
	g.mu.Unlock()
	t := time.NewTimer(statfsWait)
	defer t.Stop()
	select {
	case <-p.done:
		return p.total, p.free, p.err
	case <-t.C:
		return 0, 0, fmt.Errorf("statfs of %s has not answered for %s (a hung mount?)", path, time.Since(p.started).Round(time.Second))
	}
}

// diskUse measures one directory.
func (s *core) diskUse(what, path string) DiskUse {
	d := DiskUse{What: what, Path: path}
	total, free, err := s.statfs(path)
	switch {
	case err != nil:
		d.Level, d.Error = "unknown", err.Error()
	case total == 0:
		d.Level, d.Error = "unknown", "the filesystem reports no size"
	default:
		free = min(free, total)
		d.Total, d.Free = total, free
		d.UsedPercent = 100 * float64(total-free) / float64(total)
		d.Level = DiskLevel(d.UsedPercent)
	}
	return d
}

// disks is the disk use of the data dir, the journal dir and, when open
// (the destinations are in the state), the journal mirror (when one is
// configured) and each LOCAL or dir destination, as this node sees them.
func (s *Service) disks(open bool) []DiskUse {
	out := []DiskUse{
		s.diskUse("data", s.cfg.DataDir),
		s.diskUse("journal", datadir.JournalDir(s.cfg.DataDir)),
	}
	if !open {
		return out
	}
	ds, err := s.st.Destinations()
	if err != nil {
		return out
	}
	for _, d := range ds {
		if d.Mirror && d.Path != "" {
			out = append(out, s.diskUse("mirror", d.Path))
		}
	}
	for _, d := range ds {
		switch d.Kind {
		case "local":
			out = append(out, s.diskUse(fmt.Sprintf("destination:%s", d.Name), datadir.LocalBackupDir(s.cfg.DataDir)))
		case "dir":
			out = append(out, s.diskUse(fmt.Sprintf("destination:%s", d.Name), d.Path))
		}
	}
	return out
}

// diskWarnings is a disk_filling warning for each of the node's own
// directories (data, journal, mirror) at or above DiskWarnPercent: the
// early notice before storage.min_free_bytes pauses writes. Destinations
// have their own warning (destination_full).
func diskWarnings(disks []DiskUse, now time.Time) []Alert {
	var out []Alert
	for _, d := range disks {
		if d.What != "data" && d.What != "journal" && d.What != "mirror" {
			continue
		}
		if d.Level != DiskWarning && d.Level != DiskError {
			continue
		}
		out = append(out, newAlert(AlertDiskFilling, "disk",
			fmt.Sprintf("the %s directory's filesystem (%s) is %.0f%% full, %d bytes free: free space or grow it before writes pause", d.What, d.Path, d.UsedPercent, d.Free), now))
	}
	return out
}
