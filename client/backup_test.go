package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBackupRequestShapes: every backup route gets the method, path, query
// and body the server's route table expects, and the answers decode.
func TestBackupRequestShapes(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.EscapedPath()+" "+r.URL.RawQuery+" "+strings.TrimSpace(string(body)))
		p := r.URL.Path
		switch {
		case r.Method == "DELETE":
			w.WriteHeader(204)
		case p == "/api/v1/backup/recovery-passphrase":
			io.WriteString(w, `{"set":true,"generation":2,"label":"recovery-2"}`)
		case p == "/api/v1/backup/destinations" && r.Method == "GET":
			io.WriteString(w, `{"destinations":[{"name":"LOCAL","kind":"local","path":"/d/backup/local","keep_fulls":1,"location":"/d/backup/local","secret_set":false,
				"usage":{"total_bytes":1000,"free_bytes":250,"used_percent":75},"created":"2025-01-02T03:04:05Z","updated":"2025-01-02T03:04:05Z"},
				{"name":"off","kind":"sftp","host":"h","port":22,"user":"u","path":"/b","public_key":"ssh-ed25519 AAAA coffer","host_key":"ssh-ed25519 BBBB",
				"archiving":true,"archive_paused":true,"archived_to":57,"pending_segments":3,"archive_error":"unreachable","location":"sftp://u@h:22/b","secret_set":false,
				"created":"2025-01-02T03:04:05Z","updated":"2025-01-02T03:04:05Z"}]}`)
		case strings.HasPrefix(p, "/api/v1/backup/destinations"):
			if r.Method == "POST" && p == "/api/v1/backup/destinations" {
				w.WriteHeader(201)
			}
			io.WriteString(w, `{"name":"off","kind":"dir","path":"/b","mirror":true,"location":"/b","secret_set":false,"note":"do this next","backups":4,"skipped":["x: bad"],"ok":true}`)
		case p == "/api/v1/backup/run":
			w.WriteHeader(202)
			io.WriteString(w, `{"id":"20250102T030405Z-ab12cd34","destination":"LOCAL","kind":"full","status":"RUNNING","node":"n1","started":"2025-01-02T03:04:05Z"}`)
		case p == "/api/v1/backup/current":
			if len(seen) > 14 {
				io.WriteString(w, `{}`)
				return
			}
			io.WriteString(w, `{"running":{"id":"20250102T030405Z-ab12cd34","destination":"LOCAL","kind":"full","status":"RUNNING","node":"n1","started":"2025-01-02T03:04:05Z","bytes_written":4096}}`)
		case p == "/api/v1/backup/backups":
			io.WriteString(w, `{"backups":[{"id":"b2","destination":"LOCAL","kind":"incremental","status":"FAILED","node":"n1","reason":"disk full","base_full_id":"b1","started":"2025-01-02T03:04:05Z"},
				{"id":"b1","destination":"LOCAL","kind":"full","status":"DONE","node":"n1","file":"full/b1.cbk","first_index":1,"last_index":57,"size":12345,"sha256":"ab",
				"started":"2025-01-01T03:04:05Z","finished":"2025-01-01T03:04:07Z"}]}`)
		case p == "/api/v1/backup/schedules" && r.Method == "GET":
			io.WriteString(w, `{"schedules":[{"name":"nightly","destination":"LOCAL","type":"cron","cron":"0 2 * * *","mode":"auto","state":"ACTIVE",
				"last_run":"2025-01-02T02:00:00Z","last_result":"DONE","created":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z","next":"2025-01-03T02:00:00Z"}]}`)
		case strings.HasPrefix(p, "/api/v1/backup/schedules"):
			io.WriteString(w, `{"name":"nightly","destination":"LOCAL","type":"periodic","every":"24h","mode":"full","state":"PAUSED","created":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z"}`)
		case p == "/api/v1/sys/freeze":
			io.WriteString(w, `{"frozen":true,"until":"2025-01-02T03:09:05Z","dump":"/d/dump/full/x.cbk"}`)
		default:
			io.WriteString(w, `{"frozen":false}`)
		}
	}))
	defer srv.Close()
	c, _ := New(Config{Addresses: []string{srv.URL}})
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	st, err := c.RecoveryStatus(ctx)
	check("recovery status", err)
	if !st.Set || st.Generation != 2 || st.Label != "recovery-2" {
		t.Fatalf("recovery status %+v", st)
	}
	_, err = c.SetRecoveryPassphrase(ctx, "", "first recovery")
	check("set recovery", err)
	_, err = c.SetRecoveryPassphrase(ctx, "first recovery", "second recovery")
	check("change recovery", err)

	d, err := c.AddDestination(ctx, DestinationConfig{Name: "off", Kind: DestinationDir, Path: "/b", KeepFulls: 2, Archiving: true, Mirror: true})
	check("add destination", err)
	if d.Location != "/b" || !d.Mirror || d.Note != "do this next" {
		t.Fatalf("added %+v", d)
	}
	_, err = c.EditDestination(ctx, "off site", DestinationConfig{Kind: DestinationS3, Endpoint: "s3:9000", Bucket: "b", AccessKey: "ak", PathStyle: true,
		Recipients: []string{"age1xyz"}})
	check("edit destination", err)
	ds, err := c.ListDestinations(ctx)
	check("list destinations", err)
	if len(ds) != 2 || ds[0].Usage == nil || ds[0].Usage.UsedPercent != 75 || ds[1].Pending != 3 || ds[1].ArchivedTo != 57 ||
		!ds[1].ArchivePaused || ds[1].PublicKey == "" || ds[1].Port != 22 || ds[1].Created.Year() != 2025 {
		t.Fatalf("destinations %+v", ds)
	}
	check("delete destination", c.DeleteDestination(ctx, "off"))
	tr, err := c.TestDestination(ctx, "off")
	check("test destination", err)
	if !tr.OK || tr.Note != "do this next" {
		t.Fatalf("test %+v", tr)
	}
	rb, err := c.RebuildCatalog(ctx, "off")
	check("rebuild", err)
	if rb.Backups != 4 || len(rb.Skipped) != 1 {
		t.Fatalf("rebuild %+v", rb)
	}
	_, err = c.PauseArchive(ctx, "off")
	check("pause archive", err)
	_, err = c.ResumeArchive(ctx, "off")
	check("resume archive", err)

	rec, err := c.RunBackup(ctx, LocalDestination, BackupModeFull, false)
	check("run", err)
	if rec.Status != BackupRunning || rec.ID != "20250102T030405Z-ab12cd34" || rec.Started.IsZero() {
		t.Fatalf("run %+v", rec)
	}
	_, err = c.RunBackup(ctx, "off", "", true)
	check("run wait", err)
	cur, err := c.CurrentBackup(ctx)
	check("current", err)
	if cur == nil || cur.BytesWritten != 4096 || cur.ID != rec.ID {
		t.Fatalf("current %+v", cur)
	}
	bs, err := c.ListBackups(ctx, "")
	check("list backups", err)
	if len(bs) != 2 || bs[0].Reason != "disk full" || bs[1].Size != 12345 || bs[1].LastIndex != 57 || bs[1].Finished == nil {
		t.Fatalf("backups %+v", bs)
	}
	_, err = c.ListBackups(ctx, "off site")
	check("list backups of one destination", err)
	if cur, err = c.CurrentBackup(ctx); err != nil || cur != nil {
		t.Fatalf("no backup running: %+v %v", cur, err)
	}

	at := time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)
	_, err = c.AddSchedule(ctx, ScheduleConfig{Name: "once", Destination: LocalDestination, Type: ScheduleOnce, At: &at})
	check("add schedule", err)
	ss, err := c.ListSchedules(ctx)
	check("list schedules", err)
	if len(ss) != 1 || ss[0].Next == nil || ss[0].LastResult != "DONE" || ss[0].Config().Cron != "0 2 * * *" {
		t.Fatalf("schedules %+v", ss)
	}
	cfg := ss[0].Config()
	cfg.Type, cfg.Cron, cfg.Every = SchedulePeriodic, "", "24h"
	sc, err := c.EditSchedule(ctx, "nightly", cfg)
	check("edit schedule", err)
	if sc.Every != "24h" || sc.State != SchedulePaused {
		t.Fatalf("edited %+v", sc)
	}
	_, err = c.PauseSchedule(ctx, "nightly")
	check("pause schedule", err)
	_, err = c.ResumeSchedule(ctx, "nightly")
	check("resume schedule", err)
	check("delete schedule", c.DeleteSchedule(ctx, "nightly"))

	fr, err := c.Freeze(ctx, 90*time.Second)
	check("freeze", err)
	if !fr.Frozen || fr.Dump == "" || fr.Until.IsZero() {
		t.Fatalf("freeze %+v", fr)
	}
	_, err = c.Freeze(ctx, 0)
	check("freeze with the default timeout", err)
	fr, err = c.Thaw(ctx)
	check("thaw", err)
	if fr.Frozen {
		t.Fatalf("thaw %+v", fr)
	}

	want := []string{
		`GET /api/v1/backup/recovery-passphrase  `,
		`POST /api/v1/backup/recovery-passphrase  {"new_passphrase":"first recovery"}`,
		`POST /api/v1/backup/recovery-passphrase  {"old_passphrase":"first recovery","new_passphrase":"second recovery"}`,
		`POST /api/v1/backup/destinations  {"name":"off","kind":"dir","path":"/b","archiving":true,"mirror":true,"keep_fulls":2}`,
		`PATCH /api/v1/backup/destinations/off%20site  {"name":"off site","kind":"s3","endpoint":"s3:9000","bucket":"b","access_key":"ak","path_style":true,"recipients":["age1xyz"]}`,
		`GET /api/v1/backup/destinations  `,
		`DELETE /api/v1/backup/destinations/off  `,
		`POST /api/v1/backup/destinations/off/test  `,
		`POST /api/v1/backup/destinations/off/catalog/rebuild  `,
		`POST /api/v1/backup/destinations/off/archive/pause  `,
		`POST /api/v1/backup/destinations/off/archive/resume  `,
		`POST /api/v1/backup/run  {"destination":"LOCAL","mode":"full"}`,
		`POST /api/v1/backup/run  {"destination":"off","wait":true}`,
		`GET /api/v1/backup/current  `,
		`GET /api/v1/backup/backups  `,
		`GET /api/v1/backup/backups destination=off+site `,
		`GET /api/v1/backup/current  `,
		`POST /api/v1/backup/schedules  {"name":"once","destination":"LOCAL","type":"once","at":"2025-01-02T03:00:00Z"}`,
		`GET /api/v1/backup/schedules  `,
		`PATCH /api/v1/backup/schedules/nightly  {"name":"nightly","destination":"LOCAL","type":"periodic","every":"24h","mode":"auto"}`,
		`POST /api/v1/backup/schedules/nightly/pause  `,
		`POST /api/v1/backup/schedules/nightly/resume  `,
		`DELETE /api/v1/backup/schedules/nightly  `,
		`POST /api/v1/sys/freeze  {"timeout":"1m30s"}`,
		`POST /api/v1/sys/freeze  {}`,
		`POST /api/v1/sys/thaw  `,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestRunBackupRefused: a refused backup (409) is an API error with the
// server's code, and no record.
func TestRunBackupRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 409, map[string]any{"error": map[string]string{"code": "conflict", "message": "conflict: no full backup to build an incremental on on this destination: take a full backup first"}})
	}))
	defer srv.Close()
	c, _ := New(Config{Addresses: []string{srv.URL}})
	rec, err := c.RunBackup(context.Background(), "d", BackupModeIncremental, false)
	if !IsCode(err, "conflict") || !strings.Contains(err.Error(), "take a full backup first") || rec.ID != "" {
		t.Fatalf("%+v %v", rec, err)
	}
}

// TestStatusBackup: the status decodes warnings, the running backup, the
// destinations' health (last success and failure when present) and the freeze.
func TestStatusBackup(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"state":"open","writable":true,"alerts":[],
			"warnings":[{"component":"mirror","message":"journal mirror failing","since":"2025-01-02T03:04:05Z"}],
			"backup":{"running":{"id":"b1","destination":"nas","kind":"full","started":"2025-01-02T03:04:05Z","bytes_written":4096},
				"destinations":[{"name":"LOCAL","kind":"local","used_percent":42.5,"last_success":"2025-01-02T02:00:00Z"},
					{"name":"off","kind":"s3","pending_segments":3,"archive_error":"unreachable","last_failure":"2025-01-02T01:00:00Z"}],
				"frozen":true}}`)
	}))
	defer srv.Close()
	c, _ := New(Config{Addresses: []string{srv.URL}})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Warnings) != 1 || st.Warnings[0].Component != "mirror" || st.Warnings[0].Since.IsZero() {
		t.Fatalf("warnings %+v", st.Warnings)
	}
	b := st.Backup
	if b.Running == nil || b.Running.ID != "b1" || b.Running.BytesWritten != 4096 || !b.Frozen || len(b.Destinations) != 2 {
		t.Fatalf("backup %+v", b)
	}
	l, o := b.Destinations[0], b.Destinations[1]
	if l.UsedPercent != 42.5 || l.LastSuccess == nil || l.LastSuccess.Hour() != 2 || l.LastFailure != nil ||
		o.Pending != 3 || o.ArchiveError != "unreachable" || o.LastSuccess != nil || o.LastFailure == nil {
		t.Fatalf("destinations %+v %+v", l, o)
	}
}
