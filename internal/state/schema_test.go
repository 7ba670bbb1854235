package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// setSchema rewrites the schema version recorded in a closed state.db.
func setSchema(t *testing.T, path string, v uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(v)) }); err != nil {
		t.Fatal(err)
	}
}

func schemaOf(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	db.View(func(tx *bolt.Tx) error { v = getU64(tx.Bucket(bucketMeta), keySchema); return nil })
	return v
}

func TestOpenRecordsSchemaAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := schemaOf(t, path); got != SchemaVersion {
		t.Fatalf("schema %d, want %d", got, SchemaVersion)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s.Close()
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	setSchema(t, path, SchemaVersion+1)
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrSchema) {
		t.Fatalf("open of a newer schema: %v, want ErrSchema", err)
	}
	for _, want := range []string{fmt.Sprintf("version %d", SchemaVersion+1), fmt.Sprintf("version %d", SchemaVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if got := schemaOf(t, path); got != SchemaVersion+1 {
		t.Errorf("the refused file's schema changed to %d", got)
	}
}

func TestOpenRefusesUnreleasedSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	setSchema(t, path, OldestSchema-1)
	if _, err = Open(path, Options{}); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", OldestSchema-1)) {
		t.Fatalf("open of schema %d: %v, want ErrSchema naming it", OldestSchema-1, err)
	}
}

// Every schema between the oldest read and the current one has its step.
func TestEveryMigrationStepExists(t *testing.T) {
	for v := uint64(OldestSchema); v < SchemaVersion; v++ {
		if migrations[v] == nil {
			t.Errorf("no migration from schema %d to %d", v, v+1)
		}
	}
}

// migrate runs the steps in order inside one transaction, records the new
// version, and leaves the file untouched when a step fails.
func TestMigrateRunsStepsInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ran []uint64
	steps := map[uint64]func(*bolt.Tx) error{
		2: func(tx *bolt.Tx) error {
			ran = append(ran, 2)
			return tx.Bucket(bucketMeta).Put([]byte("m3"), []byte("x"))
		},
		3: func(tx *bolt.Tx) error { ran = append(ran, 3); return nil },
	}
	if err := db.Update(func(tx *bolt.Tx) error { return migrate(tx, 2, 2, 4, steps) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ran) != "[2 3]" {
		t.Fatalf("steps ran %v, want [2 3]", ran)
	}
	db.View(func(tx *bolt.Tx) error {
		if v := getU64(tx.Bucket(bucketMeta), keySchema); v != 4 {
			t.Errorf("schema after migration %d, want 4", v)
		}
		return nil
	})
	// A failing step rolls the whole open back.
	steps[4] = func(tx *bolt.Tx) error {
		tx.Bucket(bucketMeta).Put([]byte("m5"), []byte("x"))
		return errors.New("boom")
	}
	err = db.Update(func(tx *bolt.Tx) error { return migrate(tx, 4, 2, 6, steps) })
	if err == nil || !strings.Contains(err.Error(), "migrate state schema 4 to 5") {
		t.Fatalf("failing step: %v", err)
	}
	// A missing step is an error, not a skipped version.
	if err := db.Update(func(tx *bolt.Tx) error { return migrate(tx, 4, 2, 6, map[uint64]func(*bolt.Tx) error{}) }); !errors.Is(err, ErrSchema) {
		t.Fatalf("missing step: %v", err)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("m5")) != nil || getU64(tx.Bucket(bucketMeta), keySchema) != 4 {
			t.Error("a failed migration left changes behind")
		}
		return nil
	})
}
