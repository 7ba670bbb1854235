package backup

import (
	"log/slog"
	"os"
	"path/filepath"
)

// RemoveStaging deletes staging files a crash left behind in dir (call it
// while no backup runs); one that cannot be removed is logged (it takes
// space until the next start tries again).
func RemoveStaging(dir string, log *slog.Logger) {
	files, _ := filepath.Glob(filepath.Join(dir, "staging-*"+FileSuffix))
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			log.Warn("remove a staging file left by a crash", "error", err)
		}
	}
}
