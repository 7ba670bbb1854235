// Package metrics exposes Coffer's Prometheus metrics: requests by transport,
// route and status code with latency histograms, and, read at scrape time,
// the keystore state, journal position, raft state and audit counters.
// Nothing here ever carries key material, tokens or object names: route
// labels are patterns ("/api/v1/objects/{id}"), not paths.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coffer-kms/coffer/internal/connlimit"
	"github.com/coffer-kms/coffer/internal/service"
)

// Metrics is one server's registry.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	rejects  rejectCollector
	// series: requestKey → requestSeries.
	series    sync.Map
	seriesLen atomic.Int32
}

// New registers Coffer's metrics for svc.
func New(svc *service.Service) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coffer", Name: "requests_total",
		Help: "Requests served, by transport, route pattern, method and status code.",
	}, []string{"transport", "route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "coffer", Name: "request_duration_seconds",
		Help:    "Request latency by transport, route pattern and method.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"transport", "route", "method"})
	m.reg.MustRegister(m.requests, m.latency, &stateCollector{svc: svc},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveRequest counts one finished request.
func (m *Metrics) ObserveRequest(transport, route, method string, code int, d time.Duration) {
	k := requestKey{transport: transport, route: route, method: method, code: code}
	if s, ok := m.series.Load(k); ok {
		s := s.(requestSeries)
		s.count.Inc()
		s.latency.Observe(d.Seconds())
		return
	}
	s := requestSeries{
		count:   m.requests.WithLabelValues(transport, route, method, strconv.Itoa(code)),
		latency: m.latency.WithLabelValues(transport, route, method),
	}
	if m.seriesLen.Load() < maxSeries {
		if _, loaded := m.series.LoadOrStore(k, s); !loaded {
			m.seriesLen.Add(1)
		}
	}
	s.count.Inc()
	s.latency.Observe(d.Seconds())
}

// requestKey is the labels of one request series.
type requestKey struct {
	transport, route, method string
	code                     int
}

// requestSeries is a request series' counter and histogram, found once:
// finding them by label values hashes and checks every label on every
// request. The series are never deleted, so a kept one stays the
// registry's.
type requestSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// maxSeries bounds the series kept found (routes, methods and codes are
// bounded sets; past it requests look their series up as before).
const maxSeries = 4096

// AddConnectionLimits exports the connections a listener refused at once,
// by reason (per_source: the source held its limit; total: the listener
// was full), as coffer_connections_rejected_total.
func (m *Metrics) AddConnectionLimits(listener string, r *connlimit.Rejections) {
	m.rejects.mu.Lock()
	defer m.rejects.mu.Unlock()
	if m.rejects.by == nil {
		m.rejects.by = map[string]*connlimit.Rejections{}
		m.reg.MustRegister(&m.rejects)
	}
	m.rejects.by[listener] = r
}

var descRejected = prometheus.NewDesc("coffer_connections_rejected_total",
	"Connections a listener closed as soon as it accepted them: over the per-source limit (connections.per_source) or the listener's total (connections.max).",
	[]string{"listener", "reason"}, nil)

// rejectCollector reads the listeners' refusal counters at scrape time.
type rejectCollector struct {
	mu sync.Mutex // guards by
	by map[string]*connlimit.Rejections
}

func (c *rejectCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descRejected }

func (c *rejectCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for listener, r := range c.by {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(r.PerSource.Load()), listener, "per_source")
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(r.Total.Load()), listener, "total")
	}
}

// Handler serves the text exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the underlying registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

var (
	descState = prometheus.NewDesc("coffer_keystore_state",
		"1 for the keystore's current state (uninitialized, sealed, open), 0 for the others.", []string{"state"}, nil)
	descWritable = prometheus.NewDesc("coffer_writable",
		"1 while writes are accepted; 0 when sealed or refused (disk full, failing storage, no quorum).", nil, nil)
	descAlerts = prometheus.NewDesc("coffer_alerts",
		"Conditions an operator must see (see coffer status).", nil, nil)
	descGeneration = prometheus.NewDesc("coffer_keystore_generation",
		"Current master key generation (0 while sealed).", nil, nil)
	descJournalIndex = prometheus.NewDesc("coffer_journal_last_index",
		"Index of the last journal record.", nil, nil)
	descJournalSegments = prometheus.NewDesc("coffer_journal_segments",
		"Journal segments on disk (current and not yet archived).", nil, nil)
	descApplied = prometheus.NewDesc("coffer_state_applied_index",
		"Last raft index applied to the state.", nil, nil)
	descRaftState = prometheus.NewDesc("coffer_raft_state",
		"1 for this node's raft state (leader, follower, candidate, shutdown, stopped), 0 for the others.", []string{"state"}, nil)
	descRaftTerm = prometheus.NewDesc("coffer_raft_term",
		"Current raft term.", nil, nil)
	descRaftLast = prometheus.NewDesc("coffer_raft_last_log_index",
		"Last index in the raft log.", nil, nil)
	descRaftCommit = prometheus.NewDesc("coffer_raft_commit_index",
		"Raft commit index.", nil, nil)
	descAudit = prometheus.NewDesc("coffer_audit_records",
		"Records in this node's audit log.", nil, nil)
	descAuditFail = prometheus.NewDesc("coffer_audit_write_failures_total",
		"Audit records that could not be written.", nil, nil)
	descAuditMirror = prometheus.NewDesc("coffer_audit_syslog_lines_total",
		"Audit lines handed to the syslog mirror (audit.syslog), by outcome: sent, failed (the write returned an error) or dropped (the mirror did not keep up). Records are in the audit log either way. Absent without a mirror.",
		[]string{"outcome"}, nil)
	descDestUsed = prometheus.NewDesc("coffer_backup_destination_used_ratio",
		"Used fraction of a LOCAL or dir backup destination's filesystem (an alert is raised above 0.8).", []string{"destination"}, nil)
	descPending = prometheus.NewDesc("coffer_backup_archive_pending_segments",
		"Closed journal segments not yet shipped to an archiving destination.", []string{"destination"}, nil)
	descLastSuccess = prometheus.NewDesc("coffer_backup_last_success_timestamp_seconds",
		"When the newest successful backup to a destination finished (alert when it grows old).", []string{"destination"}, nil)
	descLastDrill = prometheus.NewDesc("coffer_backup_last_drill_success_timestamp_seconds",
		"When the newest successful restore drill of a destination started (alert when it grows older than backup.drill_max_age).", []string{"destination"}, nil)
	descDrillSpeed = prometheus.NewDesc("coffer_backup_drill_restore_bytes_per_second",
		"Restore speed the newest successful restore drill of a destination measured.", []string{"destination"}, nil)
	descBackupRunning = prometheus.NewDesc("coffer_backup_running",
		"1 while a backup runs.", nil, nil)
	descFrozen = prometheus.NewDesc("coffer_writes_frozen",
		"1 while writes are frozen for a storage snapshot (SIGUSR1 / coffer freeze).", nil, nil)
	descWarnings = prometheus.NewDesc("coffer_warnings",
		"Warnings in coffer status (do not stop writes).", nil, nil)
)

var (
	keystoreStates = []string{service.StateUninitialized, service.StateSealed, service.StateOpen}
	raftStates     = []string{"leader", "follower", "candidate", "shutdown", "stopped"}
)

// stateCollector reads the node's status at scrape time.
type stateCollector struct{ svc *service.Service }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descWritable, descAlerts, descGeneration, descJournalIndex, descJournalSegments,
		descApplied, descRaftState, descRaftTerm, descRaftLast, descRaftCommit, descAudit, descAuditFail, descAuditMirror,
		descDestUsed, descPending, descLastSuccess, descLastDrill, descDrillSpeed, descBackupRunning, descFrozen, descWarnings} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.Status()
	for _, s := range keystoreStates {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, b2f(st.State == s), s)
	}
	ch <- prometheus.MustNewConstMetric(descWritable, prometheus.GaugeValue, b2f(st.Writable))
	ch <- prometheus.MustNewConstMetric(descAlerts, prometheus.GaugeValue, float64(len(st.Alerts)))
	ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(st.KeystoreGeneration))
	ch <- prometheus.MustNewConstMetric(descJournalIndex, prometheus.GaugeValue, float64(st.Journal.LastIndex))
	ch <- prometheus.MustNewConstMetric(descJournalSegments, prometheus.GaugeValue, float64(st.Journal.Segments))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	rs := st.Raft.State
	for _, s := range raftStates {
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, b2f(strings.EqualFold(rs, s)), s)
	}
	ch <- prometheus.MustNewConstMetric(descRaftTerm, prometheus.GaugeValue, float64(st.Raft.Term))
	ch <- prometheus.MustNewConstMetric(descRaftLast, prometheus.GaugeValue, float64(st.Raft.LastIndex))
	ch <- prometheus.MustNewConstMetric(descRaftCommit, prometheus.GaugeValue, float64(st.Raft.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descAudit, prometheus.GaugeValue, float64(c.svc.AuditCount()))
	ch <- prometheus.MustNewConstMetric(descAuditFail, prometheus.CounterValue, float64(c.svc.AuditFailures()))
	if ms, ok := c.svc.AuditMirrorStats(); ok {
		ch <- prometheus.MustNewConstMetric(descAuditMirror, prometheus.CounterValue, float64(ms.Sent), "sent")
		ch <- prometheus.MustNewConstMetric(descAuditMirror, prometheus.CounterValue, float64(ms.Failed), "failed")
		ch <- prometheus.MustNewConstMetric(descAuditMirror, prometheus.CounterValue, float64(ms.Dropped), "dropped")
	}
	for _, d := range st.Backup.Destinations {
		if d.Kind == "local" || d.Kind == "dir" {
			ch <- prometheus.MustNewConstMetric(descDestUsed, prometheus.GaugeValue, d.UsedPercent/100, d.Name)
		}
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(d.Pending), d.Name)
		if d.LastSuccess != nil {
			ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, float64(d.LastSuccess.UnixNano())/1e9, d.Name)
		}
		if d.Drills != nil && d.Drills.LastGood != nil {
			ch <- prometheus.MustNewConstMetric(descLastDrill, prometheus.GaugeValue, float64(d.Drills.LastGood.Time.UnixNano())/1e9, d.Name)
			ch <- prometheus.MustNewConstMetric(descDrillSpeed, prometheus.GaugeValue, d.Drills.LastGood.BytesPerSecond, d.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descBackupRunning, prometheus.GaugeValue, b2f(st.Backup.Running != nil))
	ch <- prometheus.MustNewConstMetric(descFrozen, prometheus.GaugeValue, b2f(st.Backup.Frozen))
	ch <- prometheus.MustNewConstMetric(descWarnings, prometheus.GaugeValue, float64(len(st.Warnings)))
}
