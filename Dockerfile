# syntax=docker/dockerfile:1
# Countersign: one binary for the user API, the notifier and the recommender.
# librdkafka is linked statically through cgo (confluent-kafka-go's bundled
# build), so the runtime image needs glibc but no Kafka library.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/countersign ./cmd/countersign

# distroless base: glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/countersign /countersign
USER nonroot:nonroot
ENTRYPOINT ["/countersign"]
CMD ["-h"]
