package service

import "time"

// now is the service's clock: Config.Now, else the wall clock.
func (s *core) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}
