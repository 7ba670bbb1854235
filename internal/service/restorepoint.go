package service

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/coffer-kms/coffer/internal/state"
)

// RestorePoint is a named point in the history a restore can stop at.
type RestorePoint = state.RestorePoint

// CreateRestorePoint writes a named marker into the history (system
// administrators). Names are unique; a duplicate is a conflict naming the
// existing point. Take one before a risky change: a restore can then return
// exactly to it.
func (s *Backups) CreateRestorePoint(ctx context.Context, name string) (RestorePoint, error) {
	note(ctx, "restore-point:"+name)
	id, err := requireRole(ctx, RoleSystemAdmin, "creating a restore point")
	if err != nil {
		return RestorePoint{}, err
	}
	if err := ValidLabel("restore point", name); err != nil {
		return RestorePoint{}, err
	}
	res, err := s.applyOpen(ctx, state.TypeRestorePoint, state.RestorePoint{Name: name, CreatedBy: id.Actor()})
	if err != nil {
		return RestorePoint{}, fmt.Errorf("create restore point %q: %w", name, err)
	}
	rp, ok := res.(state.RestorePoint)
	if !ok {
		return RestorePoint{}, fmt.Errorf("create restore point %q: the state machine did not confirm the write", name)
	}
	s.log.Info("restore point created", "name", name, "index", rp.Index)
	return rp, nil
}

// ListRestorePoints lists restore points, oldest first.
func (s *Backups) ListRestorePoints(ctx context.Context) ([]RestorePoint, error) {
	if _, err := requireAdmin(ctx, "listing restore points"); err != nil {
		return nil, err
	}
	rps, err := s.st.RestorePoints()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(rps, func(a, b RestorePoint) int { return cmp.Compare(a.Index, b.Index) })
	if rps == nil {
		rps = []RestorePoint{}
	}
	return rps, nil
}
