"""The AnsiballZ payload of each module: what Ansible zips and sends to a target for one task.

    python3 bench/payload_size.py [COLLECTIONS_ROOT]   (default: scripts/env.sh's .build/collections)

Prints one JSON object: module -> {zip_bytes, files, module_utils}. ``zip_bytes`` is the size of the zip
that Ansible embeds (base64) in AnsiballZ_<module>.py, built by ansible-core's own module_common, so the
figure is what a task really ships (compression as the controller is configured: ZIP_DEFLATED).
Costs about a second per module; it touches no host.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import zipfile

MODULES = ('docker_veth', 'ovs_vlan_port', 'nat_portmap', 'host_bridge_migrate')


def payload(root, name):
    """Build the module's AnsiballZ wrapper with ansible-core and return (zip bytes, member names)."""
    # pylint: disable=import-outside-toplevel
    from ansible.executor import module_common
    from ansible.template import Templar
    from ansible.parsing.dataloader import DataLoader
    path = os.path.join(root, 'ansible_collections', 'netplumb', 'pipework', 'plugins', 'modules', name + '.py')
    built = module_common.modify_module(module_name='netplumb.pipework.' + name, module_path=path, module_args={},
                                        templar=Templar(loader=DataLoader()),
                                        task_vars={'ansible_python_interpreter': '/usr/bin/python3'},
                                        module_compression='ZIP_DEFLATED')
    # The wrapper embeds the zip as one long base64 literal; it is the only blob that decodes to a zip.
    raw = b''
    for blob in re.findall(rb'[A-Za-z0-9+/=]{1000,}', built.b_module_data):
        decoded = base64.b64decode(blob)
        if decoded.startswith(b'PK') and len(decoded) > len(raw):
            raw = decoded
    return raw, zipfile.ZipFile(io.BytesIO(raw)).namelist() if raw else []


def main(argv):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(here, '.build', 'collections'))
    sys.path.insert(0, root)
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder  # pylint: disable=import-outside-toplevel
    _AnsibleCollectionFinder(paths=[root])._install()  # pylint: disable=protected-access
    out = {}
    for name in MODULES:
        raw, names = payload(root, name)
        ours = sorted(n for n in names if '/netplumb/pipework/' in n)
        out[name] = {'zip_bytes': len(raw), 'files': len(names), 'module_utils': len(ours)}
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv))
