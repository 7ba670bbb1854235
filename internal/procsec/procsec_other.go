//go:build !linux

package procsec

import "errors"

func disableCoreDumps() error { return nil }

func lockMemory() error {
	return errors.New("memory.lock is only supported on Linux; set memory.lock: false")
}

func current() (State, error) { return State{}, nil }
