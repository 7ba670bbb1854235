package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnrollmentConfigFile is the name of an enrolled directory's configuration.
const EnrollmentConfigFile = "config.json"

// EnrollmentConfig is the config.json of an enrolled endpoint's directory
// (written by `coffer endpoint enroll --out DIR`). Relative paths are
// relative to the directory.
type EnrollmentConfig struct {
	Endpoint   string   `json:"endpoint"`
	Addresses  []string `json:"addresses"`
	TokenFile  string   `json:"token_file,omitempty"`
	CACert     string   `json:"ca_cert,omitempty"`
	ClientCert string   `json:"client_cert,omitempty"`
	ClientKey  string   `json:"client_key,omitempty"`
}

// LoadEnrollment reads an enrolled endpoint's directory: config.json, the
// token from its token file, and the paths of the CA, client certificate and
// key. The Config it returns talks as that endpoint (bearer token and, when
// the directory has a certificate, mutual TLS).
func LoadEnrollment(dir string) (Config, error) {
	if dir == "" {
		return Config{}, errors.New("enrolled client directory: no directory given")
	}
	path := filepath.Join(dir, EnrollmentConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("enrolled client directory: %w", err)
	}
	var ec EnrollmentConfig
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ec); err != nil {
		return Config{}, fmt.Errorf("enrolled client directory: %s: %w", path, err)
	}
	if len(ec.Addresses) == 0 {
		return Config{}, fmt.Errorf("enrolled client directory: %s: no addresses", path)
	}
	resolve := func(field, p string) (string, error) {
		if p == "" {
			return "", nil
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("enrolled client directory: %s: %s: %w", path, field, err)
		}
		return p, nil
	}
	cfg := Config{Addresses: append([]string(nil), ec.Addresses...)}
	if cfg.CACert, err = resolve("ca_cert", ec.CACert); err != nil {
		return Config{}, err
	}
	if cfg.ClientCert, err = resolve("client_cert", ec.ClientCert); err != nil {
		return Config{}, err
	}
	if cfg.ClientKey, err = resolve("client_key", ec.ClientKey); err != nil {
		return Config{}, err
	}
	if (cfg.ClientCert == "") != (cfg.ClientKey == "") {
		return Config{}, fmt.Errorf("enrolled client directory: %s: give both client_cert and client_key, or neither", path)
	}
	tokFile, err := resolve("token_file", ec.TokenFile)
	if err != nil {
		return Config{}, err
	}
	if tokFile != "" {
		t, err := os.ReadFile(tokFile)
		if err != nil {
			return Config{}, fmt.Errorf("enrolled client directory: token file: %w", err)
		}
		if cfg.Token = strings.TrimSpace(string(t)); cfg.Token == "" {
			return Config{}, fmt.Errorf("enrolled client directory: token file %s is empty", tokFile)
		}
	}
	if cfg.Token == "" && cfg.ClientCert == "" {
		return Config{}, fmt.Errorf("enrolled client directory: %s: neither token_file nor client_cert: no credentials", path)
	}
	return cfg, nil
}
