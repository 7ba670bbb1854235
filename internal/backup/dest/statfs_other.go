//go:build !(linux || darwin || freebsd)

package dest

func statfs(path string) (Usage, bool, error) { return Usage{}, false, nil }
