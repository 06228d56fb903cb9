# refserver, the reference HTTP server, and the PG simulator (`refserver pgsim`) in one
# static binary on a distroless base. Build context: the repository root.
#
#   docker build -t commercekit/refserver:dev .
#   docker compose up --build
FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV GOTOOLCHAIN=local CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags='-s -w' -o /out/refserver ./refserver

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/refserver /refserver
# The embedded default writes refserver.db to the working directory.
WORKDIR /home/nonroot
USER nonroot:nonroot
# Without COMMERCEKIT_JWT_SECRET the server listens on loopback only (tokens would be signed
# with the public development secret): to publish the port, set it and COMMERCEKIT_ADDR=:8080.
EXPOSE 8080
ENTRYPOINT ["/refserver"]
