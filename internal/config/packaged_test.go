package config

import (
	"testing"
	"time"
)

// TestPackagedConfigLoads: the production example the Debian package
// installs as /etc/coffer/coffer.yaml is valid, and its smart stop fits
// the unit's TimeoutStopSec (90s).
func TestPackagedConfigLoads(t *testing.T) {
	c, err := Load("../../packaging/coffer.yaml")
	if err != nil {
		t.Fatalf("packaging/coffer.yaml: %v", err)
	}
	if c.DataDir != "/var/lib/coffer" || !c.Memory.Lock || c.Listen != "127.0.0.1:8200" {
		t.Errorf("packaged config: data_dir %q, memory.lock %v, listen %q", c.DataDir, c.Memory.Lock, c.Listen)
	}
	if d := c.Shutdown.SmartTimeout.Duration; d <= 0 || d >= 90*time.Second {
		t.Errorf("shutdown.smart_timeout %v does not fit TimeoutStopSec=90s", d)
	}
}
