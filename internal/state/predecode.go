package state

import (
	"runtime"
	"sync"

	"github.com/hashicorp/raft"
)

// A batch's commands are decoded before its write transaction, in parallel
// when the batch is large: JSON decoding is most of the cost of applying a
// command, and inside the transaction it runs on one core. Applying stays
// one code path (apply): decodeApply takes a body decoded ahead when its
// type is the one the handler wants, and decodes the body itself otherwise.
// Decoding is deterministic, so either way the handler sees the same value.

// predecoders lists the command types whose bodies are decoded ahead, with
// the body type their handler in apply takes. A type missing here, or listed
// with another body type than its handler's, is decoded in the transaction
// as before (TestPredecodersMatchHandlers checks the list).
var predecoders = map[Type]func(body []byte) (any, bool){
	TypeTokenCreate:     predecodeAs[Token],
	TypeTokenRevoke:     predecodeAs[TokenRevoke],
	TypeObjectCreate:    predecodeObjectCreate,
	TypeObjectRotate:    predecodeAs[ObjectRotate],
	TypeObjectState:     predecodeAs[ObjectState],
	TypeObjectAttrs:     predecodeAs[ObjectAttrs],
	TypeObjectRestore:   predecodeAs[ObjectRestore],
	TypeWalletCreate:    predecodeAs[Wallet],
	TypeGrant:           predecodeAs[Grant],
	TypeEndpointEnroll:  predecodeAs[EndpointEnroll],
	TypeEndpointRenew:   predecodeAs[EndpointRenew],
	TypeAppRoleLogin:    predecodeAs[AppRoleLogin],
	TypeKVVersions:      predecodeAs[KVVersions],
	TypeKVMetadata:      predecodeAs[KVMetadataPut],
	TypeKVMetadataMerge: predecodeAs[KVMetadataMerge],
}

func predecodeAs[T any](body []byte) (any, bool) {
	var v T
	if decodeJSON(body, &v) != nil {
		return nil, false // decoded again in apply, which returns the error
	}
	return v, true
}

// predecodeObjectCreate: object creations are most of a history, and
// their bodies decode without reflection (decodeObjectCreate).
func predecodeObjectCreate(body []byte) (any, bool) {
	c, err := decodeObjectCreate(body)
	return c, err == nil
}

// prepared is a log entry's command decoded ahead of the transaction.
type prepared struct {
	cmd Command
	err error // the entry is not a command (UnmarshalCommand's error)
	ok  bool  // the entry is a command and was prepared
}

// parallelPrepareMin is the batch size from which decoding is spread over
// worker goroutines: below it, starting them costs more than it saves.
const parallelPrepareMin = 256

// prepare decodes the commands of logs, each result at its entry's
// position.
func prepare(logs []*raft.Log) []prepared {
	out := make([]prepared, len(logs))
	workers := min(runtime.GOMAXPROCS(0), len(logs)/(parallelPrepareMin/2))
	if len(logs) < parallelPrepareMin || workers < 2 {
		prepareRange(logs, out)
		return out
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*len(logs)/workers, (w+1)*len(logs)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			prepareRange(logs[lo:hi], out[lo:hi])
		}()
	}
	wg.Wait()
	return out
}

func prepareRange(logs []*raft.Log, out []prepared) {
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		cmd, err := UnmarshalCommand(l.Data)
		if err == nil {
			if dec := predecoders[cmd.Type]; dec != nil {
				if v, ok := dec(cmd.Body); ok {
					cmd.pre = v
				}
			}
		}
		out[i] = prepared{cmd: cmd, err: err, ok: true}
	}
}
