package backup

import (
	"time"
)

// MaxDrills is how many drill results a catalog keeps.
const MaxDrills = 20

// Drill is the result of one restore drill: the newest backup chain of a
// destination restored into a scratch directory, opened with the recovery
// passphrase, checked and replayed to its newest archived record.
type Drill struct {
	Time     time.Time `json:"time"`   // when it started
	Result   string    `json:"result"` // OK or FAILED
	Reason   string    `json:"reason,omitempty"`
	Node     string    `json:"node,omitempty"`
	Full     string    `json:"full_backup,omitempty"` // the full the chain starts from
	Files    int       `json:"files,omitempty"`       // backup files restored
	Index    uint64    `json:"index,omitempty"`       // the index reached
	Records  int       `json:"records,omitempty"`     // journal records replayed
	Bytes    int64     `json:"bytes,omitempty"`       // backup bytes read
	Duration float64   `json:"duration_seconds"`
	// Restore speed measured by the drill (0 when it failed).
	RecordsPerSecond float64 `json:"records_per_second,omitempty"`
	BytesPerSecond   float64 `json:"bytes_per_second,omitempty"`
}

// OK reports a successful drill.
func (d Drill) OK() bool { return d.Result == "OK" }

// AddDrill appends a drill result, keeping the newest MaxDrills.
func (c *Catalog) AddDrill(d Drill) {
	c.Drills = append(c.Drills, d)
	if n := len(c.Drills); n > MaxDrills {
		c.Drills = append([]Drill(nil), c.Drills[n-MaxDrills:]...)
	}
}

// LastDrill is the newest drill (nil if none ran).
func (c Catalog) LastDrill() *Drill {
	if len(c.Drills) == 0 {
		return nil
	}
	d := c.Drills[len(c.Drills)-1]
	return &d
}

// LastGoodDrill is the newest successful drill (nil if none succeeded).
func (c Catalog) LastGoodDrill() *Drill {
	for i := len(c.Drills) - 1; i >= 0; i-- {
		if c.Drills[i].OK() {
			d := c.Drills[i]
			return &d
		}
	}
	return nil
}

// EstimateRestore estimates how long restoring size bytes of backups takes
// at the speed the last successful drill measured (0 when unknown).
func (c Catalog) EstimateRestore(size int64) time.Duration {
	d := c.LastGoodDrill()
	if d == nil || d.BytesPerSecond <= 0 || size <= 0 {
		return 0
	}
	return time.Duration(float64(size) / d.BytesPerSecond * float64(time.Second))
}

// NewestChain is the newest full (or dump) on timeline tl (0: the writer
// timeline) and every backup and archived segment of that timeline after
// it, which together restore to the newest archived record: the files a
// restore of the latest state reads. ok is false when there is no full.
func (c Catalog) NewestChain(tl uint32) (full Entry, chain []Entry, ok bool) {
	if tl == 0 {
		tl = c.WriterTimeline()
	}
	for _, e := range c.Entries {
		if (e.Kind == KindFull || e.Kind == KindDump) && e.TimelineID() == max(tl, 1) && (!ok || e.LastIndex > full.LastIndex ||
			(e.LastIndex == full.LastIndex && e.Created.After(full.Created))) {
			full, ok = e, true
		}
	}
	if !ok {
		return Entry{}, nil, false
	}
	chain = []Entry{full}
	for _, e := range c.Entries {
		if e.File != full.File && e.TimelineID() == full.TimelineID() && e.LastIndex > full.LastIndex &&
			(e.Kind == KindSegment || (e.Kind == KindIncremental && e.BaseFullID == full.ID)) {
			chain = append(chain, e)
		}
	}
	return full, chain, true
}

// Reach is the newest index a chain restores to.
func Reach(chain []Entry) uint64 {
	var n uint64
	for _, e := range chain {
		n = max(n, e.LastIndex)
	}
	return n
}
