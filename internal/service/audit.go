package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/datadir"
)

// AuditRecord is one audited request.
type AuditRecord = audit.Record

// AuditReport is the result of verifying the audit chain.
type AuditReport = audit.Report

// Audit appends one record for a finished request. Transports call it for
// every request they serve; the message is the error text (which never
// carries key material), the object ids are those the service noted. A
// repeated backup progress poll that succeeds is not recorded (pollAudit).
func (s *Service) Audit(c *Call, operation string, status int, result, message string) {
	if s.audit == nil || c == nil || (status < 400 && c.isQuiet()) {
		return
	}
	rec := audit.Record{
		Node:      s.nodeID,
		Actor:     c.Identity.Actor(),
		Roles:     c.Identity.RoleNames(),
		Source:    c.Source,
		Transport: c.Transport,
		Operation: operation,
		Objects:   c.Objects(),
		Result:    result,
		Status:    status,
		Error:     message,
		LatencyMS: float64(time.Since(c.Start).Microseconds()) / 1000,
	}
	rec.Error = clip(rec.Error, 512)
	rec.Operation = clip(rec.Operation, 128)
	rec.Source = clip(rec.Source, 128)
	if len(rec.Objects) > 32 {
		rec.Objects = append(rec.Objects[:31], fmt.Sprintf("…and %d more", len(rec.Objects)-31))
	}
	for i, o := range rec.Objects {
		rec.Objects[i] = clip(o, 256)
	}
	if _, err := s.audit.Append(rec); err != nil {
		s.auditFailures.Add(1)
		s.log.Error("audit write failed", "operation", operation, "error", err)
	}
}

// AuditRecords returns up to limit records from seq from (audit managers).
func (s *Service) AuditRecords(ctx context.Context, from uint64, limit int) ([]AuditRecord, error) {
	if err := s.auditReadable(ctx, limit); err != nil {
		return nil, err
	}
	return s.audit.Read(max(from, 1), limit)
}

// auditReadable checks that the caller may read limit records of the log.
func (s *core) auditReadable(ctx context.Context, limit int) error {
	if _, err := requireRole(ctx, RoleAuditManager, "reading the audit log"); err != nil {
		return err
	}
	if limit <= 0 || limit > MaxListLimit {
		return fmt.Errorf("%w: limit %d: use 1 to %d", ErrInvalid, limit, MaxListLimit)
	}
	if s.audit == nil {
		return fmt.Errorf("%w: the audit log is not open", ErrUnavailable)
	}
	return nil
}

// AuditRecordsNewest reads up to limit records with sequence numbers below
// before (0 = the end of the log), newest first (audit managers).
func (s *Service) AuditRecordsNewest(ctx context.Context, before uint64, limit int) ([]AuditRecord, error) {
	if err := s.auditReadable(ctx, limit); err != nil {
		return nil, err
	}
	last := s.audit.Count()
	if before != 0 && before <= last {
		last = before - 1
	}
	if last == 0 {
		return nil, nil
	}
	first := uint64(1)
	if last > uint64(limit) { // #nosec G115 -- limit > 0, checked by auditReadable
		first = last - uint64(limit) + 1 // #nosec G115 -- limit > 0, checked by auditReadable
	}
	recs, err := s.audit.Read(first, int(last-first+1)) // #nosec G115 -- last-first+1 <= limit, an int
	if err != nil {
		return nil, err
	}
	slices.Reverse(recs)
	return recs, nil
}

// VerifyAudit checks this node's audit chain (audit managers). A broken
// chain is reported as an error that names the file, line and record.
func (s *Service) VerifyAudit(ctx context.Context) (AuditReport, error) {
	if _, err := requireRole(ctx, RoleAuditManager, "verifying the audit log"); err != nil {
		return AuditReport{}, err
	}
	if s.audit != nil {
		if err := s.audit.Sync(); err != nil && !errors.Is(err, audit.ErrClosed) {
			return AuditReport{}, fmt.Errorf("verify the audit log: %w", err)
		}
	}
	rep, err := audit.Verify(datadir.AuditDir(s.cfg.DataDir))
	var te *audit.TamperError
	if errors.As(err, &te) {
		return rep, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return rep, nil
	}
	return rep, err
}

// AuditCount is the number of audit records written on this node.
func (s *Service) AuditCount() uint64 {
	if s.audit == nil {
		return 0
	}
	return s.audit.Count()
}

// AuditFailures counts audit records that could not be written.
func (s *Service) AuditFailures() uint64 { return s.auditFailures.Load() }

// AuditMirrorStats reports what the syslog mirror did with audit lines
// (sent, failed, dropped because it did not keep up); ok is false when no
// mirror is configured.
func (s *Service) AuditMirrorStats() (stats audit.MirrorStats, ok bool) {
	if s.cfg.AuditSyslog == nil || s.audit == nil {
		return audit.MirrorStats{}, false
	}
	return s.audit.MirrorStats(), true
}

// clip bounds a caller-influenced string in an audit record, so that no
// request can make its own record too large to write.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
