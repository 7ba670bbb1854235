package service

import (
	"net"
	"strings"
	"testing"
	"time"
)

// The check of a destination ends well before the CLI's default request
// timeout (60s) with an error naming the destination and the time waited,
// so that an unreachable S3 shows the probe's error, not "outcome unknown".
func TestProbeEndsBeforeTheClientWithItsError(t *testing.T) {
	if ProbeTimeout > 30*time.Second {
		t.Fatalf("ProbeTimeout %s: a CLI request (60s by default) would time out first", ProbeTimeout)
	}
	s, _ := backupSvc(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and never answers
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	old := ProbeTimeout
	ProbeTimeout = 300 * time.Millisecond
	defer func() { ProbeTimeout = old }()
	start := time.Now()
	_, err = s.Backups.AddDestination(rootCtx(), DestinationConfig{Name: "s3", Kind: "s3", Endpoint: ln.Addr().String(), Bucket: "backups",
		AccessKey: "a", SecretKey: "secret-key", PathStyle: true, Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("add an S3 destination that does not answer: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the probe took %s", d)
	}
}
