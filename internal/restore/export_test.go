package restore

// SetReplayBatch sets the replay batch size for a test and returns the
// function that puts it back.
func SetReplayBatch(n int) (undo func()) {
	old := replayBatch
	replayBatch = n
	return func() { replayBatch = old }
}
