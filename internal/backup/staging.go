package backup

import (
	"os"
	"path/filepath"
)

// removeStaging deletes staging files a crash left behind.
func removeStaging(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "staging-*"+FileSuffix))
	for _, f := range files {
		os.Remove(f)
	}
}
