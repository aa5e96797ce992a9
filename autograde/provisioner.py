"""How nbclient starts the grader kernel in a batch worker: forked warm by the worker's autograde.zygote.

A jupyter_client kernel provisioner (the kernelspec's `metadata.kernel_provisioner` names it, and
pyproject.toml registers it), running in the worker itself: it is the only code that holds the
zygote's descriptor, so nothing a student starts can ask the zygote for a grader kernel. Where the
zygote cannot start, it starts the kernel as the local provisioner does, with the kernelspec's argv.
"""
import os

from jupyter_client.provisioning import LocalProvisioner

from autograde import zygote

NAME = "llm-losses-zygote"


class ZygoteProvisioner(LocalProvisioner):
    async def launch_kernel(self, cmd, **kwargs):
        parent = zygote.for_this_worker()
        if parent is None:
            return await super().launch_kernel(cmd, **kwargs)
        connection_file = cmd[cmd.index("-f") + 1]
        self.process = parent.grader_kernel(connection_file, dict(kwargs.get("env") or os.environ),
                                            str(kwargs.get("cwd") or os.getcwd()))
        self.pid = self.pgid = self.process.pid
        self.cwd = kwargs.get("cwd")
        return self.connection_info
