package kmip

import (
	"errors"
	"fmt"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/service"
)

// errorTable maps the service's sentinel errors to KMIP result reasons and,
// for the audit log, the HTTP-like status REST would give. First match wins.
var errorTable = []struct {
	err    error
	reason kmip.ResultReason
	status int
}{
	{service.ErrUnauthenticated, kmip.ResultReasonAuthenticationNotSuccessful, 401},
	{service.ErrForbidden, kmip.ResultReasonPermissionDenied, 403},
	{service.ErrInvalid, kmip.ResultReasonInvalidField, 400},
	{service.ErrState, kmip.ResultReasonIllegalOperation, 409},
	{service.ErrGone, kmip.ResultReasonKeyValueNotPresent, 410},
	{service.ErrNotFound, kmip.ResultReasonItemNotFound, 404},
	{service.ErrConflict, kmip.ResultReasonObjectAlreadyExists, 409},
	// No KMIP reason for it: a general failure whose message says so.
	{service.ErrOutcomeUnknown, kmip.ResultReasonGeneralFailure, 503},
	{service.ErrSealed, kmip.ResultReasonGeneralFailure, 503},
	{service.ErrUninitialized, kmip.ResultReasonGeneralFailure, 503},
	{service.ErrWriteUnavailable, kmip.ResultReasonGeneralFailure, 503},
	{service.ErrUnavailable, kmip.ResultReasonGeneralFailure, 503},
	{service.ErrStopping, kmip.ResultReasonGeneralFailure, 503},
	// The message says which: read-only restricted mode (no quorum), or a
	// leader change (not applied, send it again).
	{service.ErrReadOnly, kmip.ResultReasonGeneralFailure, 503},
	{service.ErrNotLeaderNow, kmip.ResultReasonGeneralFailure, 503},
}

// reasonStatus gives the audit status of a KMIP result reason this package
// produces itself (not from the service).
var reasonStatus = map[kmip.ResultReason]int{
	kmip.ResultReasonAuthenticationNotSuccessful: 401,
	kmip.ResultReasonPermissionDenied:            403,
	kmip.ResultReasonItemNotFound:                404,
	kmip.ResultReasonKeyValueNotPresent:          410,
	kmip.ResultReasonObjectAlreadyExists:         409,
	kmip.ResultReasonIllegalOperation:            409,
	kmip.ResultReasonGeneralFailure:              500,
}

// mapErr turns a service error into a KMIP error carrying the service's
// message (which never holds key material). Errors outside the table are
// reported as a general failure without their text, which is logged.
func (s *Server) mapErr(err error) error {
	if err == nil {
		return nil
	}
	var ke kmipserver.Error
	if errors.As(err, &ke) {
		return ke
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return kmipserver.Error{Reason: e.reason, Message: err.Error()}
		}
	}
	s.log.Error("kmip: request failed", "error", err)
	return kmipserver.Error{Reason: kmip.ResultReasonGeneralFailure, Message: "internal error (logged on the server)"}
}

// auditOutcome derives the audit result code and status of a finished item.
func auditOutcome(bi *kmip.ResponseBatchItem, err error) (code string, status int) {
	if err == nil && (bi == nil || bi.ResultStatus == kmip.ResultStatusSuccess) {
		return "ok", 200
	}
	reason := kmip.ResultReasonGeneralFailure
	var ke kmipserver.Error
	switch {
	case errors.As(err, &ke):
		reason = ke.Reason
	case err == nil && bi != nil:
		reason = bi.ResultReason
	}
	status, ok := reasonStatus[reason]
	if !ok {
		status = 400
	}
	return ttlv.EnumStr(reason), status
}

func invalidf(format string, args ...any) error {
	return kmipserver.Error{Reason: kmip.ResultReasonInvalidField, Message: fmt.Sprintf(format, args...)}
}

func kerr(reason kmip.ResultReason, format string, args ...any) error {
	return kmipserver.Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}
