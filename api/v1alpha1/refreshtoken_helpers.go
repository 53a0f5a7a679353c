package v1alpha1

import "time"

// EndsAt is when the session can no longer be refreshed unless it is
// refreshed first: the earlier of the sliding and the absolute expiry.
func (s *RefreshTokenSpec) EndsAt() time.Time {
	if s.AbsoluteExpiresAt.Before(&s.ExpiresAt) {
		return s.AbsoluteExpiresAt.Time
	}
	return s.ExpiresAt.Time
}
