package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/scheme"
)

// metadataAnswer asks the API server to answer a write with the object's
// metadata alone (as the metadata client's reads do), or, from a server
// that cannot, with the whole object, whose metadata reads the same.
const metadataAnswer = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"

// NewWriter returns the REST client of Config.Writes: RefreshTokens in
// JSON, over cfg's HTTP client and rate limiter (pass the session client's
// config, so that both draw on one --api-qps).
func NewWriter(cfg *rest.Config, hc *http.Client) (rest.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &identityv1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = "application/json"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme.Scheme).WithoutConversion()
	rc, err := rest.RESTClientForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("creating the session writer: %w", err)
	}
	return rc, nil
}

// write creates rt (create) or updates it conditionally on its
// resourceVersion, and leaves in rt the metadata the API server answered
// with: its resourceVersion, uid, generation and the rest.
//
// The answer is the object's metadata alone. The spec the API server
// stored is the one sent, since its schema defaults nothing, so encoding
// the whole object back, and decoding it here, would be work for nothing
// on every login and refresh: about a tenth of rotor's CPU per refresh
// (profiled), and the API server's encoding of the spec, went to it. (A
// mutating admission webhook that edited sessions' spec would go unseen
// until the next read; sessions are rotor's alone.)
func (s *Store) write(ctx context.Context, rt *identityv1alpha1.RefreshToken, create bool) error {
	w := s.cfg.Writes
	if w == nil {
		if create {
			return s.client.Create(ctx, rt)
		}
		return s.client.Update(ctx, rt)
	}
	var req *rest.Request
	if create {
		req = w.Post().Namespace(rt.Namespace).Resource("refreshtokens")
	} else {
		req = w.Put().Namespace(rt.Namespace).Resource("refreshtokens").Name(rt.Name)
	}
	res := req.SetHeader("Accept", metadataAnswer).Body(rt).Do(ctx)
	// Error, not Raw's error: it decodes the Status of a refusal (a
	// conflict, an absent session, a full quota) as the client does.
	if err := res.Error(); err != nil {
		return err
	}
	raw, err := res.Raw()
	if err != nil {
		return err
	}
	var answer metav1.PartialObjectMetadata
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("decoding the answer to a session write: %w", err)
	}
	if answer.ResourceVersion == "" || answer.Name != rt.Name {
		return fmt.Errorf("the answer to a session write is not the session's metadata (kind %q)", answer.Kind)
	}
	rt.ObjectMeta = answer.ObjectMeta
	return nil
}
