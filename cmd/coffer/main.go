// Command coffer is the Coffer key management server and its admin CLI.
package main

import (
	"os"

	"github.com/coffer-kms/coffer/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
