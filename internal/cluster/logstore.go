package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// logStore is raft's log and stable store on bbolt, in the on-disk format
// of hashicorp/raft-boltdb v2 (a data dir written by either opens with the
// other): bucket "logs" maps the 8-byte big-endian index to the
// msgpack-encoded raft.Log (time.Time as a msgpack extension, not the
// builtin), bucket "conf" holds the stable store's keys.
//
// It differs in how it writes, not in what: the log bucket's pages are
// split full (FillPercent 1) instead of half full, since raft only appends
// at the end of that bucket or cuts whole ranges off either end, so an
// append writes about half the pages and the file holds about half the
// pages per entry.
type logStore struct {
	db *bolt.DB
}

var (
	bucketLogs = []byte("logs")
	bucketConf = []byte("conf")
	// errKeyNotFound: raft compares the stable store's error text with
	// "not found" to tell a missing key from a failure.
	errKeyNotFound = errors.New("not found")
	// encodeHandle encodes raft.Log as raft-boltdb v2 does with its
	// default options (the older time format, which every decoder reads).
	encodeHandle = func() *codec.MsgpackHandle {
		h := &codec.MsgpackHandle{}
		h.TimeNotBuiltin = true
		return h
	}()
	decodeHandle = &codec.MsgpackHandle{}
)

// logFillPercent is the fill of the log bucket's split pages.
const logFillPercent = 1.0

func openLogStore(path string, opts *bolt.Options) (*logStore, error) {
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketLogs); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketConf)
		return err
	}); err != nil {
		db.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, err
	}
	return &logStore{db: db}, nil
}

// Close closes the database.
func (s *logStore) Close() error { return s.db.Close() }

// FirstIndex implements raft.LogStore (0: empty log).
func (s *logStore) FirstIndex() (uint64, error) { return s.endIndex((*bolt.Cursor).First) }

// LastIndex implements raft.LogStore (0: empty log).
func (s *logStore) LastIndex() (uint64, error) { return s.endIndex((*bolt.Cursor).Last) }

// endIndex is the index of the log entry a cursor's First or Last finds.
func (s *logStore) endIndex(end func(*bolt.Cursor) ([]byte, []byte)) (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := end(tx.Bucket(bucketLogs).Cursor()); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// GetLog implements raft.LogStore.
func (s *logStore) GetLog(idx uint64, log *raft.Log) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], idx)
	return s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(key[:])
		if v == nil {
			return raft.ErrLogNotFound
		}
		return codec.NewDecoderBytes(v, decodeHandle).Decode(log)
	})
}

// StoreLog implements raft.LogStore.
func (s *logStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs implements raft.LogStore: one transaction (one commit) for all.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	// Encoded before the transaction; keys and values share one buffer
	// each (bbolt keeps the slices until the commit).
	keys := make([]byte, 8*len(logs))
	vals := make([][]byte, len(logs))
	var buf bytes.Buffer
	enc := codec.NewEncoder(&buf, encodeHandle)
	for i, l := range logs {
		binary.BigEndian.PutUint64(keys[8*i:], l.Index)
		buf.Reset()
		enc.Reset(&buf)
		if err := enc.Encode(l); err != nil {
			return fmt.Errorf("encode raft log %d: %w", l.Index, err)
		}
		vals[i] = bytes.Clone(buf.Bytes())
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		b.FillPercent = logFillPercent
		for i := range logs {
			if err := b.Put(keys[8*i:8*i+8], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange implements raft.LogStore: removes [min, max].
func (s *logStore) DeleteRange(min, max uint64) error {
	var from [8]byte
	binary.BigEndian.PutUint64(from[:], min)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		b.FillPercent = logFillPercent
		c := b.Cursor()
		for k, _ := c.Seek(from[:]); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set implements raft.StableStore.
func (s *logStore) Set(k, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConf).Put(k, v)
	})
}

// Get implements raft.StableStore (errKeyNotFound: no such key).
func (s *logStore) Get(k []byte) ([]byte, error) {
	var v []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		got := tx.Bucket(bucketConf).Get(k)
		if got == nil {
			return errKeyNotFound
		}
		v = bytes.Clone(got)
		return nil
	})
	return v, err
}

// SetUint64 implements raft.StableStore.
func (s *logStore) SetUint64(k []byte, v uint64) error {
	return s.Set(k, binary.BigEndian.AppendUint64(nil, v))
}

// GetUint64 implements raft.StableStore.
func (s *logStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raft stable key %q: %d bytes, want 8", k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
