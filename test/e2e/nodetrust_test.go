package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// TestClusterNodeTrust: a node is its certificate's key, not a name the
// cluster CA signed. A certificate minted with a member's name but another
// key (anyone holding the CA key can mint one) is refused on the raft
// transport and the API, forged forwarding headers from it or from an
// endpoint's certificate give no identity, and removing a node revokes its
// own certificate on both.
func TestClusterNodeTrust(t *testing.T) {
	var caKeyHolder *tlsutil.CA
	nodes, _ := startClusterWith(t, 2, func(n *node) { caKeyHolder = caBeforeInit(t, n) })
	ctx := context.Background()
	li, leader := leaderOf(t, nodes)
	follower := nodes[1-li]
	fid, _ := nodeIDOf(t, follower)
	var raftAddr string
	st, err := leader.local().ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Leader {
			raftAddr = n.RaftAddress
		}
	}
	if raftAddr == "" {
		t.Fatalf("no leader raft address in %+v", st)
	}

	ftls := filepath.Join(follower.dataDir, "tls")
	genuine, err := tls.LoadX509KeyPair(filepath.Join(ftls, tlsutil.NodeCertFile), filepath.Join(ftls, tlsutil.NodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// Someone who got the CA key (from the first node's disk before its
	// keystore first opened, an old backup): mint the follower's name with
	// another key.
	ca := caKeyHolder
	fkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fder, err := ca.IssueNodeCert(&fkey.PublicKey, fid)
	if err != nil {
		t.Fatal(err)
	}
	forged := tls.Certificate{Certificate: [][]byte{fder}, PrivateKey: fkey}

	// An enrolled endpoint with a client certificate from the same CA.
	ekey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "app1"}}, ekey)
	enr, err := leader.https().EnrollEndpoint(ctx, client.EnrollRequest{Name: "app1", CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(enr.Certificate))
	if blk == nil {
		t.Fatalf("enrolment returned no certificate")
	}
	endpoint := tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: ekey}

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(leader.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(caPEM)
	// asLocal is the leader's answer to GET /api/v1/cluster sent with cert
	// and the headers of a node forwarding from its control socket.
	asLocal := func(cert tls.Certificate) int { return forwardedLocalStatus(leader.url, roots, cert, fid) }
	// raftRefuses reports whether the leader's raft transport refuses a
	// connection with cert (an alert), rather than keeping it open for RPCs.
	raftRefuses := func(cert tls.Certificate, wait time.Duration) bool {
		t.Helper()
		d := &net.Dialer{Timeout: 10 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", raftAddr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
		if err != nil {
			return true
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(wait))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}

	if got := asLocal(genuine); got != http.StatusOK {
		t.Fatalf("the member's own certificate forwarding from its control socket: status %d, want 200", got)
	}
	if got := asLocal(forged); got != http.StatusUnauthorized {
		t.Fatalf("a certificate with the member's name but another key: status %d, want 401", got)
	}
	if got := asLocal(endpoint); got == http.StatusOK {
		t.Fatalf("an endpoint's certificate with forged forwarding headers was served as the local root")
	}
	if raftRefuses(genuine, 3*time.Second) {
		t.Fatal("the raft transport refused the member's own certificate")
	}
	if !raftRefuses(forged, 30*time.Second) {
		t.Fatal("the raft transport kept a connection with a certificate minted with a member's name but another key")
	}

	follower.stop()
	if out, err := coffer(t, nil, "cluster", "remove", fid, "--data-dir", leader.dataDir); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %v\n%s", err, out)
	}
	waitUntil(t, 30*time.Second, func() bool { return asLocal(genuine) == http.StatusUnauthorized }, "the removed node's certificate refused on the API")
	if !raftRefuses(genuine, 30*time.Second) {
		t.Fatal("the raft transport kept a connection with the removed node's certificate")
	}
}

// TestClusterNodeKeyUpgrade: member records written before keys were
// recorded (an older build's) keep the cluster working after the upgrade;
// the leader records each member's key as first presented, and from then
// on a certificate with that member's name but another key is refused.
func TestClusterNodeKeyUpgrade(t *testing.T) {
	var ca *tlsutil.CA
	nodes, _ := startClusterWith(t, 2, func(n *node) { ca = caBeforeInit(t, n) })
	_, leader := leaderOf(t, nodes)
	var follower *node
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	fid, _ := nodeIDOf(t, follower)
	for _, n := range nodes {
		n.stop()
	}
	// What an older build wrote: no key in any member record.
	for _, n := range nodes {
		db, err := bolt.Open(datadir.StatePath(n.dataDir), 0o600, &bolt.Options{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("cluster_nodes"))
			if b == nil {
				return errors.New("no cluster_nodes bucket")
			}
			var recs [][2][]byte
			b.ForEach(func(k, v []byte) error {
				var m map[string]any
				if err := json.Unmarshal(v, &m); err != nil {
					return err
				}
				if _, ok := m["key_sha256"]; !ok {
					return errors.New("a member record without a key before the downgrade")
				}
				delete(m, "key_sha256")
				nv, _ := json.Marshal(m)
				recs = append(recs, [2][]byte{append([]byte(nil), k...), nv})
				return nil
			})
			for _, r := range recs {
				if err := b.Put(r[0], r[1]); err != nil {
					return err
				}
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		n.start()
	}
	for _, n := range nodes {
		n.waitState("open")
	}
	// Whichever node leads after the restart records its own key when it
	// opens, and the other's, as first presented, with this log line.
	recorded := func() bool {
		return strings.Contains(leader.logs.String()+follower.logs.String(), "node certificate key recorded")
	}
	if testutil.Poll(60*time.Second, func() error {
		if !recorded() {
			return testutil.ErrNotYet
		}
		return nil
	}) != nil {
		t.Fatalf("the leader did not record the follower's certificate key:\n%s\n%s", leader.logs, follower.logs)
	}
	waitVoters(t, withToken(t, nodes[0], nodes[0].token), 2)

	ftls := filepath.Join(follower.dataDir, "tls")
	fkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fder, err := ca.IssueNodeCert(&fkey.PublicKey, fid)
	if err != nil {
		t.Fatal(err)
	}
	genuine, err := tls.LoadX509KeyPair(filepath.Join(ftls, tlsutil.NodeCertFile), filepath.Join(ftls, tlsutil.NodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// Whichever node leads now: ask both, the leader answers for itself.
	for _, target := range nodes {
		if target == follower {
			continue
		}
		roots := x509.NewCertPool()
		caPEM, _ := os.ReadFile(target.caFile)
		roots.AppendCertsFromPEM(caPEM)
		status := func(cert tls.Certificate) int { return forwardedLocalStatus(target.url, roots, cert, fid) }
		if got := status(genuine); got != http.StatusOK {
			t.Fatalf("the member's own certificate after the upgrade: status %d, want 200", got)
		}
		if got := status(tls.Certificate{Certificate: [][]byte{fder}, PrivateKey: fkey}); got != http.StatusUnauthorized {
			t.Fatalf("a certificate with the member's name but another key after the upgrade: status %d, want 401", got)
		}
	}
	// The key is in the replicated record on every node, not only in the
	// leader's memory.
	leaf, err := x509.ParseCertificate(genuine.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	want := tlsutil.KeyFingerprint(leaf)
	for _, n := range nodes {
		n.stop()
	}
	for _, n := range nodes {
		db, err := bolt.Open(datadir.StatePath(n.dataDir), 0o600, &bolt.Options{Timeout: 10 * time.Second, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		db.View(func(tx *bolt.Tx) error {
			var m struct {
				Key string `json:"key_sha256"`
			}
			if v := tx.Bucket([]byte("cluster_nodes")).Get([]byte(fid)); v != nil {
				json.Unmarshal(v, &m)
			}
			got = m.Key
			return nil
		})
		db.Close()
		if got != want {
			t.Fatalf("the follower's record in %s holds key %q, want its certificate's %q", n.dataDir, got, want)
		}
	}
}

// forwardedLocalStatus is the status of GET /api/v1/cluster at url, sent
// with cert as node fid calling for itself (X-Coffer-Forwarded-Local), or -1
// when the connection failed.
func forwardedLocalStatus(url string, roots *x509.CertPool, cert tls.Certificate, fid string) int {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url+"/api/v1/cluster", nil)
	req.Header.Set("X-Coffer-Forwarded-By", fid)
	req.Header.Set("X-Coffer-Forwarded-Local", "1")
	resp, err := hc.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// caBeforeInit is the CA of n, started and not yet initialised, with its
// key: a plain file until the keystore first opens and seals it into the
// replicated state.
func caBeforeInit(t *testing.T, n *node) *tlsutil.CA {
	t.Helper()
	ca, err := tlsutil.LoadCA(filepath.Join(n.dataDir, "tls"))
	if err != nil {
		t.Fatalf("the CA key before init: %v", err)
	}
	return ca
}
