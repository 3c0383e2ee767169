# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find containers with the Docker SDK: one API connection per run, one inspect per container."""

from __future__ import annotations

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

try:
    import docker  # noqa: F401 pylint: disable=unused-import
    from docker.errors import DockerException, NotFound
    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the target host
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = exc

    class DockerException(Exception):
        pass

    class NotFound(DockerException):
        pass


class ContainerInfo:
    """What the modules need of a container."""

    def __init__(self, inspect):
        self.id = inspect['Id']
        self.name = inspect.get('Name', '').lstrip('/')
        state = inspect.get('State') or {}
        self.running = bool(state.get('Running'))
        self.pid = state.get('Pid') or 0
        self.status = state.get('Status', 'unknown')

    @property
    def netns_path(self):
        return '/proc/%d/ns/net' % self.pid


class DockerClient:
    """A lazily opened low-level Docker API client."""

    def __init__(self, docker_host=None, timeout=60):
        self.docker_host = docker_host
        self.timeout = timeout
        self._api = None

    def _client(self):
        if self._api is None:
            if not HAS_DOCKER:
                raise PipeworkError('the Docker SDK for Python is missing on the target host (pip or apt '
                                    'package "docker" / "python3-docker"; the prerequisites role installs it): %s'
                                    % DOCKER_IMPORT_ERROR)
            try:
                kwargs = {'timeout': self.timeout, 'version': 'auto'}
                if self.docker_host:
                    kwargs['base_url'] = self.docker_host
                self._api = docker.APIClient(**kwargs)
            except DockerException as exc:
                raise PipeworkError('docker_host: cannot connect to Docker at %s: %s'
                                    % (self.docker_host or 'the default socket', exc))
        return self._api

    def inspect(self, name_or_id):
        """The container, or None if Docker has no such container."""
        try:
            return ContainerInfo(self._client().inspect_container(name_or_id))
        except NotFound:
            return None
        except DockerException as exc:
            raise PipeworkError('container: Docker could not inspect %r: %s' % (name_or_id, exc))

    def close(self):
        if self._api is not None:
            self._api.close()
            self._api = None


def require_running(option, name, info):
    """The container must exist and run (a stopped one has no network namespace to wire)."""
    if info is None:
        raise PipeworkError('%s: no container named or with ID %r' % (option, name))
    if not info.running or not info.pid:
        raise PipeworkError('%s: container %r is not running (status %s); start it first'
                            % (option, name, info.status))
    return info
