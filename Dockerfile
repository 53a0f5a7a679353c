# syntax=docker/dockerfile:1
# rotor's image: a static binary on distroless "static", running as the
# non-root user 65532. Build with `make docker-build` (needs docker or
# podman; the project's CI has no container engine and does not build it).
# For reproducible builds, pin both base images by digest.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# .dockerignore admits only the sources the binary is built from.
COPY . .
ARG VERSION=v0.1.0
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/rotor .

FROM gcr.io/distroless/static:nonroot
ARG VERSION=v0.1.0
LABEL org.opencontainers.image.title="rotor" \
      org.opencontainers.image.description="Kubernetes-native OAuth 2.0 token issuer" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/rotor /rotor
# distroless "nonroot": uid and gid 65532, as the chart's securityContext expects.
USER 65532:65532
EXPOSE 8443 8081 9090
ENTRYPOINT ["/rotor"]
CMD ["serve"]
