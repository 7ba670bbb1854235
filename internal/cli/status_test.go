package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/service"
)

// TestStatusShapes: what the server marshals decodes into the client's
// types: the status's warnings and backup side, a destination's mirror and
// note.
func TestStatusShapes(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	st := service.Status{State: "open", Alerts: []service.Alert{},
		Warnings: []service.Alert{{Component: "mirror", Message: "journal mirror failing", Since: t0}},
		Backup: service.BackupStatus{
			Running:      &service.BackupRunning{ID: "b1", Destination: "nas", Kind: "full", Started: t0, BytesWritten: 4096},
			Destinations: []service.DestinationHealth{{Name: "nas", Kind: "dir", UsedPercent: 42, Pending: 3, ArchiveError: "boom", LastSuccess: &t0, LastFailure: &t1}},
			Frozen:       true,
		}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got client.Status
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := client.BackupStatus{
		Running:      &client.RunningBackup{ID: "b1", Destination: "nas", Kind: "full", Started: t0, BytesWritten: 4096},
		Destinations: []client.DestinationHealth{{Name: "nas", Kind: "dir", UsedPercent: 42, Pending: 3, ArchiveError: "boom", LastSuccess: &t0, LastFailure: &t1}},
		Frozen:       true,
	}
	gb, _ := json.Marshal(got.Backup)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) || len(got.Warnings) != 1 || got.Warnings[0].Message != "journal mirror failing" {
		t.Fatalf("status decodes to %s %+v, want %s", gb, got.Warnings, wb)
	}

	v := service.DestinationView{DestinationConfig: service.DestinationConfig{Name: "nas", Kind: "dir", Path: "/b", Mirror: true}, Note: "do this"}
	b, _ = json.Marshal(v)
	var d client.Destination
	if err := json.Unmarshal(b, &d); err != nil || !d.Mirror || d.Note != "do this" {
		t.Fatalf("destination decodes to %+v, %v", d, err)
	}
	b, _ = json.Marshal(d.DestinationConfig)
	var sc service.DestinationConfig
	if err := json.Unmarshal(b, &sc); err != nil || !sc.Mirror {
		t.Fatalf("destination config decodes to %+v, %v", sc, err)
	}
}

func TestStatusTable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"state":"open","writable":false,
			"alerts":[{"component":"disk","message":"disk full","since":"2025-01-02T03:04:05Z"}],
			"warnings":[{"component":"mirror","message":"journal mirror failing","since":"2025-01-02T03:04:05Z"},{"component":"backup","message":"nas is 85% full"}],
			"backup":{"running":{"id":"b1","destination":"nas","kind":"full","started":"2025-01-02T03:04:05Z","bytes_written":5242880},
				"destinations":[{"name":"LOCAL","kind":"local","used_percent":42.4,"last_success":"2025-01-02T02:00:00Z"},
					{"name":"off","kind":"s3","pending_segments":3,"archive_error":"unreachable","last_failure":"2025-01-02T01:00:00Z"}],
				"frozen":true}}`)
	}))
	defer srv.Close()
	code, out, stderr := run("status", "--address", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	for _, want := range []string{
		"ALERT [disk] since 2025-01-02T03:04:05Z: disk full\nWARNING [mirror] since 2025-01-02T03:04:05Z: journal mirror failing\nWARNING [backup]: nas is 85% full\n",
		"Backup running:  full b1 to nas since ", ", 5.0 MiB written",
		"Writes frozen:   yes",
		"DESTINATION  TYPE   USED  PENDING  LAST SUCCESS", "  LAST FAILURE", "  ARCHIVE ERROR\n",
		"LOCAL        local  42%   0        " + fmtTime(time.Date(2025, 1, 2, 2, 0, 0, 0, time.UTC)) + "  -  ",
		"off          s3     -     3        -   ",
		"unreachable",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run("status", "--address", srv.URL, "--format", "json")
	if code != 0 || !strings.Contains(out, `"warnings": [`) || !strings.Contains(out, `"bytes_written": 5242880`) ||
		!strings.Contains(out, `"last_failure": "2025-01-02T01:00:00Z"`) || !strings.Contains(out, `"frozen": true`) {
		t.Fatalf("json: %s", out)
	}
}

// fakeDestinationServer answers destination add, edit, list and test with
// mirror and note set, recording the requests.
func fakeDestinationServer(t *testing.T) (*httptest.Server, *[]string) {
	var mu sync.Mutex
	var seen []string
	view := `"name":"nas","kind":"dir","path":"/mnt/nas","mirror":true,"keep_fulls":2,"location":"/mnt/nas","secret_set":false,"created":"2025-01-02T03:04:05Z","updated":"2025-01-02T03:04:05Z"`
	note := `"note":"journal mirror not attached: permission denied"`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.Path+" "+strings.TrimSpace(string(body)))
		switch {
		case r.URL.Path == "/api/v1/backup/destinations" && r.Method == "GET":
			io.WriteString(w, `{"destinations":[{`+view+`}]}`)
		case r.URL.Path == "/api/v1/backup/destinations/nas/test":
			io.WriteString(w, `{"ok":true,`+note+`}`)
		default:
			io.WriteString(w, `{`+view+`,`+note+`}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestDestinationMirrorAndNote(t *testing.T) {
	srv, seen := fakeDestinationServer(t)
	code, out, stderr := run("backup", "destination", "add", "nas", "--type", "dir", "--path", "/mnt/nas", "--mirror", "--address", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	if !strings.Contains(out, "Every journal record is also written to /mnt/nas/mirror/<cluster-id>, fsynced before the write is acknowledged.") ||
		!strings.HasSuffix(out, "\n\nNOTE: journal mirror not attached: permission denied\n") {
		t.Errorf("add:\n%s", out)
	}
	// An edit that does not give --mirror keeps it.
	if code, _, stderr = run("backup", "destination", "edit", "nas", "--keep-fulls", "3", "--address", srv.URL); code != 0 {
		t.Fatalf("edit: %s", stderr)
	}
	code, out, stderr = run("backup", "destination", "edit", "nas", "--mirror=false", "--address", srv.URL, "--format", "json")
	if code != 0 || !strings.Contains(out, `"note": "journal mirror not attached`) || stderr != "NOTE: journal mirror not attached: permission denied\n" {
		t.Errorf("edit json: code %d, stdout %s, stderr %q", code, out, stderr)
	}
	code, out, _ = run("backup", "destination", "list", "--address", srv.URL)
	if code != 0 || !strings.Contains(out, "nas   dir+mirror  /mnt/nas") {
		t.Errorf("list:\n%s", out)
	}
	code, out, _ = run("backup", "destination", "test", "nas", "--address", srv.URL)
	if code != 0 || !strings.Contains(out, "destination nas OK") || !strings.Contains(out, "NOTE: journal mirror not attached") {
		t.Errorf("test:\n%s", out)
	}
	want := []string{
		`POST /api/v1/backup/destinations {"name":"nas","kind":"dir","path":"/mnt/nas","mirror":true}`,
		`GET /api/v1/backup/destinations `,
		`PATCH /api/v1/backup/destinations/nas {"name":"nas","kind":"dir","path":"/mnt/nas","mirror":true,"keep_fulls":3}`,
		`GET /api/v1/backup/destinations `,
		`PATCH /api/v1/backup/destinations/nas {"name":"nas","kind":"dir","path":"/mnt/nas","keep_fulls":2}`,
		`GET /api/v1/backup/destinations `,
		`POST /api/v1/backup/destinations/nas/test `,
	}
	if strings.Join(*seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(*seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestFreezeTimeout: without --timeout no timeout is sent (the server's
// backup.freeze_timeout applies); with it, the duration is sent.
func TestFreezeTimeout(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, strings.TrimSpace(string(b)))
		io.WriteString(w, `{"frozen":true,"until":"2025-01-02T03:09:05Z"}`)
	}))
	defer srv.Close()
	for _, args := range [][]string{{"freeze"}, {"freeze", "--timeout", "10m"}} {
		if code, _, stderr := run(append(args, "--address", srv.URL)...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	if strings.Join(bodies, " ") != `{} {"timeout":"10m0s"}` {
		t.Fatalf("bodies %q", bodies)
	}
}

// TestClusterStatusReadOnlyNode: a node without quorum labels itself
// read-only, not follower, and names no member a follower of a leader it
// does not know.
func TestClusterStatusReadOnlyNode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"cluster_id":"c1","role":"read-only","nodes":[
			{"id":"n1","voter":true,"self":true,"raft_address":"10.0.0.1:8201"},
			{"id":"n2","voter":true,"raft_address":"10.0.0.2:8201"}]}`)
	}))
	defer srv.Close()
	code, out, stderr := run("cluster", "status", "--address", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	if !regexp.MustCompile(`n1 +read-only \(this node\)`).MatchString(out) {
		t.Fatalf("this node's role:\n%s", out)
	}
	if strings.Contains(out, "follower") {
		t.Fatalf("a read-only node calls a member a follower:\n%s", out)
	}
}

// TestStatusAlertRunbook: an alert's code and runbook survive the wire, and
// coffer status prints the runbook under the alert (and a warning's too).
func TestStatusAlertRunbook(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	st := service.Status{State: "open",
		Alerts:   []service.Alert{{Code: service.AlertDiskFull, Component: "disk", Message: "no space", Since: t0, Runbook: "docs/runbooks/disk-full.md"}},
		Warnings: []service.Alert{{Code: service.AlertArchivePending, Component: "backup", Message: "3 segments wait", Since: t0, Runbook: "docs/runbooks/journal-segments-piling-up.md"}},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got client.Status
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if a := got.Alerts[0]; a.Code != "disk_full" || a.Runbook != "docs/runbooks/disk-full.md" {
		t.Fatalf("alert decodes to %+v", a)
	}
	var out strings.Builder
	printStatus(&out, got)
	for _, want := range []string{
		"ALERT [disk] since 2025-01-02T03:04:05Z: no space\n  runbook: docs/runbooks/disk-full.md\n",
		"WARNING [backup] since 2025-01-02T03:04:05Z: 3 segments wait\n  runbook: docs/runbooks/journal-segments-piling-up.md\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestClusterStatusSealedMember: a member that answers sealed is shown as
// sealed, not as a follower with unknown positions (which reads as an
// unreachable node, one the runbooks send to be replaced).
func TestClusterStatusSealedMember(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"cluster_id":"c1","role":"leader","leader":"n1","nodes":[
			{"id":"n1","voter":true,"leader":true,"self":true,"raft_address":"10.0.0.1:8201","reachable":true,"state":"open","applied_index":7,"lag":0,"caught_up":true},
			{"id":"n2","voter":true,"raft_address":"10.0.0.2:8201","reachable":true,"state":"sealed"},
			{"id":"n3","voter":true,"raft_address":"10.0.0.3:8201","api_url":"https://10.0.0.3:8200"}]}`)
	}))
	defer srv.Close()
	code, out, stderr := run("cluster", "status", "--address", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	if !regexp.MustCompile(`n2 +sealed`).MatchString(out) {
		t.Fatalf("the sealed member's role:\n%s", out)
	}
	if !regexp.MustCompile(`n3 +unreachable`).MatchString(out) {
		t.Fatalf("the unreachable member's role:\n%s", out)
	}
}

// TestClusterStatusOfAnOlderServer: a server of an earlier build reports
// no member states, and its "reachable" is false for a member that
// answered sealed as for one that did not answer: in a rolling upgrade
// (this command upgraded, the server not yet restarted) such a member is
// not shown as plainly unreachable, which the runbooks send to be replaced.
func TestClusterStatusOfAnOlderServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"cluster_id":"c1","role":"leader","leader":"n1","nodes":[
			{"id":"n1","voter":true,"leader":true,"self":true,"raft_address":"10.0.0.1:8201","reachable":true,"applied_index":7,"lag":0,"caught_up":true},
			{"id":"n2","voter":true,"raft_address":"10.0.0.2:8201","api_url":"https://10.0.0.2:8200","reachable":false}]}`)
	}))
	defer srv.Close()
	code, out, stderr := run("cluster", "status", "--address", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	if !regexp.MustCompile(`n2 +unreachable or sealed`).MatchString(out) {
		t.Fatalf("a member an older server could not read:\n%s", out)
	}
}
