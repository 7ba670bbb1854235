package dest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
	"golang.org/x/crypto/ssh"
)

// stallingSSH is an SSH server that authenticates anyone, accepts the sftp
// subsystem and then never answers: what a hung sftp-server or a server
// whose storage hangs looks like. (A small fake: the real sshd is in the
// conformance and failure suites; OpenSSH cannot be made to hang on demand.)
func stallingSSH(t *testing.T) int {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PasswordCallback: func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					ch, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					go func() {
						for r := range creqs {
							r.Reply(r.Type == "subsystem", nil) // then silence
						}
					}()
					go func() { <-done; ch.Close() }()
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSFTPStalledServer: a server that accepts SSH but never answers the
// sftp init fails the connect within the timeout, and the end of a
// context ends the wait too, instead of hanging the caller forever (a
// caller may hold a lock the whole node needs).
func TestSFTPStalledServer(t *testing.T) {
	port := stallingSSH(t)
	cfg := dest.SFTPConfig{Host: "127.0.0.1", Port: port, User: "u", Password: "p", Path: "b", Timeout: time.Second}
	start := time.Now()
	_, err := dest.NewSFTP(context.Background(), cfg)
	if err == nil {
		t.Fatal("connected to a server that never answers")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("connect gave up after %s with a 1s timeout", d)
	}
	cfg.Timeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start = time.Now()
	if _, err := dest.NewSFTP(ctx, cfg); err == nil {
		t.Fatal("connected to a server that never answers")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("connect ignored its context for %s", d)
	}
}
