# tce-appliance: one image for every node (stage 1, stage 2, Receiver); the command picks it.
#
#   docker build -t tce-appliance .
#   docker run --rm tce-appliance --help
#
# The node's configuration is mounted read-only at /etc/tce/tce.yaml (TCE_CONFIG); its state
# (key ring, database, spool, stores) lives in a volume at /var/lib/tce (TCE_HOME), initialised
# by `tce init` on first start (see deploy/entrypoint.sh). See docker-compose.yml.

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY appliance appliance
COPY policies policies
COPY pdi pdi
COPY stage1_modality stage1_modality
COPY stage2_export_manager stage2_export_manager
COPY receiver receiver
# Wheels for the project and every dependency (PostgreSQL driver included), built once.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

FROM python:3.12-slim-bookworm

# dcmtk (echoscu, storescu, dcmdump) is optional: handy for checks from inside the container,
# not needed by tce itself. Build with --build-arg WITH_DCMTK=0 for a smaller image.
ARG WITH_DCMTK=1
RUN if [ "$WITH_DCMTK" = 1 ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends dcmtk \
        && rm -rf /var/lib/apt/lists/*; \
    fi

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels 'tce-appliance[postgres]' \
    && rm -rf /wheels
COPY deploy/entrypoint.sh /usr/local/bin/tce-entrypoint

# Never root: the node only needs its own volume. Folders owned by tce in the image make new
# named volumes mounted there owned by tce too (Docker copies the ownership on first mount).
RUN groupadd --system --gid 10001 tce \
    && useradd --system --uid 10001 --gid tce --home-dir /var/lib/tce --shell /usr/sbin/nologin tce \
    && mkdir -p /etc/tce /var/lib/tce /var/lib/tce-media \
    && chown tce:tce /var/lib/tce /var/lib/tce-media \
    && chmod 0700 /var/lib/tce
USER tce:tce
WORKDIR /var/lib/tce

ENV TCE_CONFIG=/etc/tce/tce.yaml \
    TCE_HOME=/var/lib/tce \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# `tce` with a first-start `tce init` in front of it (key ring and folders, when TCE_ROLE is set).
ENTRYPOINT ["tce-entrypoint"]
CMD ["--help"]
