package vault

import "testing"

// TestUIMountsListsWhatTheCallerMayRead: sys/internal/ui/mounts answers
// every valid token with the mounts whose wallet it may read (Vault's UI
// and clients list mounts with it), not only key administrators.
func TestUIMountsListsWhatTheCallerMayRead(t *testing.T) {
	f := newFixture(t)
	if _, err := f.svc.Access.CreateWallet(rootCtx(), "other", ""); err != nil {
		t.Fatal(err)
	}
	f.do(t, f.tokens["root"], "POST", "/v1/sys/mounts/hidden", `{"type":"kv","options":{"version":"2","wallet":"other"}}`)
	for who, want := range map[string][]string{
		"root":    {"kv/", "transit/", "hidden/"},
		"ep-read": {"kv/", "transit/"},
		"ep-none": {},
	} {
		r := f.do(t, f.tokens[who], "GET", "/v1/sys/internal/ui/mounts", "")
		if r.status != 200 {
			t.Fatalf("%s: status %d %s", who, r.status, r.raw)
		}
		secret, _ := r.data(t)["secret"].(map[string]any)
		if len(secret) != len(want) {
			t.Errorf("%s: mounts %v, want %v", who, secret, want)
		}
		for _, m := range want {
			if _, ok := secret[m]; !ok {
				t.Errorf("%s: mount %s missing from %v", who, m, secret)
			}
		}
		if auth, _ := r.data(t)["auth"].(map[string]any); auth["token/"] == nil {
			t.Errorf("%s: no token/ auth method in %s", who, r.raw)
		}
	}
	if r := f.do(t, "", "GET", "/v1/sys/internal/ui/mounts", ""); r.status != 403 {
		t.Errorf("without a token: status %d, want 403", r.status)
	}
}
