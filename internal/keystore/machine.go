package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// MachineIDFileEnv names an environment variable: when set, DefaultMachineIdentity
// reads that file instead of /etc/machine-id. It is a knob for tests and for
// containers whose /etc/machine-id is not stable.
const MachineIDFileEnv = "COFFER_MACHINE_ID_FILE"

var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// DefaultMachineIdentity returns the contents (surrounding whitespace
// trimmed) of /etc/machine-id, or /var/lib/dbus/machine-id if that is not
// readable. If COFFER_MACHINE_ID_FILE is set, only that file is read. It fails
// if no file is readable or the file is empty. Errors name the files, never
// their contents.
func DefaultMachineIdentity() ([]byte, error) {
	if p := os.Getenv(MachineIDFileEnv); p != "" {
		id, err := readMachineID(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", MachineIDFileEnv, err)
		}
		return id, nil
	}
	var errs []error
	for _, p := range machineIDFiles {
		id, err := readMachineID(p)
		if err == nil {
			return id, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no machine identity: %w", errors.Join(errs...))
}

func readMachineID(path string) ([]byte, error) {
	f, err := os.Open(path) // #nosec G703 -- a fixed system path (/etc/machine-id or its fallback), or a test's
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	id := bytes.TrimSpace(b)
	if len(id) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return bytes.Clone(id), nil
}
