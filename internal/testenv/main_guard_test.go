package testenv_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEveryContainerPackageHasMain: a test package that starts containers (through testenv
// or commercetest) must terminate them when its tests end, by calling Main from its TestMain:
// with Ryuk disabled (as it must be here) nothing else does, and each run of such a package
// leaves a MariaDB or Redis container running on the machine for good.
func TestEveryContainerPackageHasMain(t *testing.T) {
	uses := regexp.MustCompile(`\b(testenv|commercetest)\.[A-Z]`)
	usesContainers, hasMain := map[string]bool{}, map[string]bool{}
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		usesContainers[dir] = usesContainers[dir] || uses.Match(src)
		hasMain[dir] = hasMain[dir] || strings.Contains(string(src), "func TestMain(")
		return nil
	})
	require.NoError(t, err)
	for dir, ok := range usesContainers {
		if ok {
			assert.True(t, hasMain[dir], "%s uses testenv or commercetest but has no TestMain calling testenv.Main: its containers outlive its tests", dir)
		}
	}
}
