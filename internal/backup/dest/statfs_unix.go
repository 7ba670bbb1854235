//go:build linux || darwin || freebsd

package dest

import "golang.org/x/sys/unix"

func statfs(path string) (Usage, bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, false, err
	}
	bs := uint64(st.Bsize) // #nosec G115 -- the block size statfs reports is positive
	return Usage{Total: uint64(st.Blocks) * bs, Free: uint64(st.Bavail) * bs}, true, nil
}
