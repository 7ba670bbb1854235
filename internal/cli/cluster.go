package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/server"
	"github.com/coffer-kms/coffer/internal/service"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "High availability on Raft: status, join tokens, join, switchover, remove, recover",
		Long: `A cluster is two or more Coffer nodes replicating one state through Raft,
over mutual TLS with node certificates from Coffer's CA. Every node whose
configuration sets cluster.listen is a cluster member; the first one is a
cluster of one from its first start (it was initialised as usual). Others
join it:

  on the cluster:    coffer cluster token create           (one-time token)
  on the new node:   coffer server --config new.yaml        (uninitialised)
                     coffer cluster join https://LEADER:8200 --token T --data-dir DIR

The new node receives the CA certificate, its node and server certificates
and the master keys over TLS (checked against the CA fingerprint in the
token), seals the keys under its own keystore passphrase, catches up from a
raft snapshot, and becomes a voter. The CA's private key reaches it sealed
in the replicated state, usable only while its keystore is open. Writes reaching a follower are forwarded to the leader; reads are
served locally. A node without quorum (the survivor of a two-node pair, or a
partitioned minority) goes into read-only restricted mode: it serves reads
and refuses writes (HTTP 503, code read_only_restricted) until quorum
returns. Automatic failover needs three voters.`,
		Example: `  coffer cluster status
  coffer cluster token create --ttl 30m
  coffer cluster join https://10.0.0.1:8200 --token cjt1.... --data-dir /var/lib/coffer
  coffer cluster switchover --to node-2f1c...
  coffer cluster remove node-9a0b...
  coffer cluster recover --force-standalone --data-dir /var/lib/coffer`,
	}
	cmd.AddCommand(newClusterInitCmd(g), newClusterStatusCmd(g), newClusterTokenCmd(g), newClusterJoinCmd(g), newClusterSwitchoverCmd(g),
		newClusterRemoveCmd(g), newClusterPromoteCmd(g), newClusterRecoverCmd(g))
	return cmd
}

func newClusterInitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Make this node the first of a cluster (records its addresses; safe to repeat)",
		Long: `Run on the first node, initialised and running with cluster.listen set in
its configuration. It records the node's raft and API addresses for the
nodes that will join, and prints the cluster; then create a join token for
each new node (coffer cluster token create).`,
		Example: "  coffer cluster init --data-dir /var/lib/coffer\n  coffer cluster token create --data-dir /var/lib/coffer",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				st, err := c.InitCluster(ctx)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, st)
				}
				for _, n := range st.Nodes {
					if n.Self {
						fmt.Fprintf(cmd.OutOrStdout(), "cluster %s: node %s leads, raft at %s, API at %s\n", st.ClusterID, n.ID, n.RaftAddress, orDash(n.APIURL))
					}
				}
				fmt.Fprintln(cmd.OutOrStdout(), "next: coffer cluster token create, then coffer cluster join on each new node")
				return nil
			})
		},
	}
}

func newClusterStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the members, the leader, voters, last contact, applied index and lag",
		Long: `Lists every member of the raft configuration as the answering node sees it:
its role (a member that answers sealed shows as sealed: it takes no part
until coffer keystore open there; one that does not answer as unreachable),
whether it votes, whether it leads, its applied raft index (asked from the
node itself; "-" if it cannot be reached), its lag (how far that is behind
the leader's commit index; "-" if the node or the leader cannot be
reached), whether it has caught up since it opened (a node that has not
sends its reads to the leader), and for this node when it last heard from
the leader.`,
		Example: "  coffer cluster status\n  coffer cluster status --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				st, err := c.ClusterStatus(ctx)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, st)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cluster %s: this node is %s; leader %s\n", st.ClusterID, st.Role, orDash(st.Leader))
				tw := newTable(cmd)
				fmt.Fprintln(tw, "NODE\tROLE\tVOTER\tRAFT ADDRESS\tAPI\tAPPLIED\tLAG\tCAUGHT UP\tLAST CONTACT")
				for _, n := range st.Nodes {
					role := nodeRole(st, n)
					applied, lag, caught, lc := "-", "-", "-", "-"
					if n.Applied != nil {
						applied = fmt.Sprint(*n.Applied)
					}
					if n.Lag != nil {
						lag = fmt.Sprint(*n.Lag)
					}
					if n.CaughtUp != nil {
						caught = map[bool]string{true: "yes", false: "no"}[*n.CaughtUp]
					}
					if n.LastContact != nil {
						lc = time.Since(*n.LastContact).Round(time.Millisecond).String() + " ago"
					}
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, role, n.Voter, n.RaftAddress, orDash(n.APIURL), applied, lag, caught, lc)
				}
				return tw.Flush()
			})
		},
	}
}

func newClusterTokenCmd(g *globals) *cobra.Command {
	t := &cobra.Command{Use: "token", Short: "Create one-time join tokens"}
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time token a new node joins with",
		Long: `The token is shown once. It is valid for one join within --ttl, and
carries the fingerprint of the cluster CA, so that the joining node knows
it talks to this cluster before it sends anything.`,
		Example: "  coffer cluster token create --ttl 30m",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				tok, err := c.CreateJoinToken(ctx, ttl)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, tok)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Join token (one use, until %s):\n%s\n", fmtTime(tok.Expires), tok.Token)
				return nil
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used (at most 168h)")
	t.AddCommand(create)
	return t
}

func newClusterJoinCmd(g *globals) *cobra.Command {
	var token, passFile string
	cmd := &cobra.Command{
		Use:   "join URL --token T --data-dir DIR",
		Short: "Join this uninitialised node to the cluster at URL",
		Long: `Run it against the new node's control socket (--data-dir) while its server
runs with cluster.listen set and no keystore yet. URL is the https address
of any member (a follower forwards the join to the leader). The new node's
keystore is sealed under its own passphrase (--passphrase-file, or asked
twice); auto-open is enabled on each node separately.`,
		Example: "  coffer cluster join https://10.0.0.1:8200 --token cjt1.... --data-dir /var/lib/coffer --passphrase-file pass",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				return errors.New("--token is required (coffer cluster token create on the cluster)")
			}
			pass, err := readPassphrase(cmd, passFile, "Keystore passphrase for this node", true)
			if err != nil {
				return err
			}
			return useSecrets(func() error {
				return g.withClient(func(ctx context.Context, c *client.Client) error {
					st, err := c.JoinCluster(ctx, args[0], token, string(pass))
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "joined cluster %s; this node is %s (it becomes a voter once it has caught up)\n", st.ClusterID, st.State)
					return nil
				})
			}, pass)
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "one-time join token")
	cmd.Flags().StringVar(&passFile, "passphrase-file", "", "read this node's new keystore passphrase from this file (- for stdin)")
	return cmd
}

func newClusterSwitchoverCmd(g *globals) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "switchover [--to NODE]",
		Short: "Hand leadership to another voter (switch roles) without dropping requests",
		Long: `The leader transfers leadership to --to (default: the most up-to-date
voter). Requests in flight finish; new writes go to the new leader (clients
and followers follow it). Use it before maintenance on the leader.`,
		Example: "  coffer cluster switchover\n  coffer cluster switchover --to node-2f1c",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				leader, err := c.Switchover(ctx, to)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "leader is now %s\n", leader)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the node to lead (default: the most up-to-date voter)")
	return cmd
}

func newClusterRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a node from the cluster (unpair)",
		Long: `Takes NODE out of the raft configuration and forgets it, with the key its
node certificate was bound to: every member refuses that certificate from
then on (raft, forwarding, node calls). Replacing a failed node is removing
it and joining a fresh one. The leader cannot remove itself: switch over
first. A removal that would leave voters of which the leader reaches no
majority (the other node of three is down, say) is refused, naming the
unreachable ones: it would stop every write. The removed machine's disk still holds the master keys and the CA
key, sealed under its keystore passphrase: wipe it.`,
		Example: "  coffer cluster remove node-9a0b",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				if err := c.RemoveNode(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s removed\n", args[0])
				return nil
			})
		},
	}
}

func newClusterPromoteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "promote NODE",
		Short: "Make a caught-up non-voter a voter (a joined node does it by itself)",
		Long: `A node that joined replicates as a non-voter until it has caught up, then
asks the leader to make it a voter. Use this only if that did not happen
(see coffer cluster status). A node the leader cannot reach is not
promoted when the voters would then have no majority it reaches.`,
		Example: "  coffer cluster promote node-2f1c",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				if err := c.PromoteNode(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s is a voter\n", args[0])
				return nil
			})
		},
	}
}

func newClusterRecoverCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "recover --force-standalone --data-dir DIR",
		Short: "Make a stopped survivor the only voter (DANGER: split brain if the others return)",
		Long: `For the survivor of a two-node pair (or of a cluster that lost its
majority for good) that stays in read-only restricted mode: with the server
stopped, this rewrites its raft configuration so that it is the only voter;
started again, it leads and takes writes.

DANGER: confirm first that the other members are gone for good (powered
off, disks wiped, or removed from the network). If one of them comes back
with its old data, there are two clusters that each believe they hold the
keys: writes on both sides diverge (split brain). Rebuild the others as new
nodes (coffer cluster join) instead of restarting them.`,
		Example: "  systemctl stop coffer\n  coffer cluster recover --force-standalone --data-dir /var/lib/coffer\n  systemctl start coffer",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				return errors.New("this makes the node the only voter: confirm with --force-standalone (read coffer cluster recover --help first)")
			}
			dir := g.dataDir
			if dir == "" {
				dir = os.Getenv(envDataDir)
			}
			if dir == "" {
				return errors.New("coffer cluster recover needs --data-dir DIR")
			}
			lock, err := server.LockDataDir(dir)
			if err != nil {
				return fmt.Errorf("%w (stop the server first)", err)
			}
			defer lock.Close()
			if err := service.RecoverStandalone(dir); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "this node is now the only voter of its cluster; start it, then join fresh nodes to it")
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force-standalone", false, "confirm that the other members are gone for good")
	return cmd
}

// nodeRole is a member's role as the answering node sees it: its own role
// as it reports it (a node without quorum is read-only, not a follower),
// a member that answered sealed (or uninitialized), one that did not
// answer, the leader, and the other members as followers while a leader
// is known.
func nodeRole(st client.ClusterStatus, n client.ClusterNode) string {
	role := "follower"
	switch {
	case n.Self && st.Role != "":
		role = st.Role
	case n.State != "" && n.State != "open":
		// Reachable, but takes no part in raft until it is opened.
		role = n.State
	case !n.Reachable && n.APIURL != "":
		role = "unreachable"
		if !slices.ContainsFunc(st.Nodes, func(m client.ClusterNode) bool { return m.State != "" }) {
			// A server of an earlier build reports no states: its
			// "reachable" is false for a member that answered sealed too.
			role = "unreachable or sealed"
		}
	case n.Leader:
		role = "leader"
	case st.Leader == "":
		role = "member (no leader known)"
	}
	if n.Self {
		role += " (this node)"
	}
	return role
}
