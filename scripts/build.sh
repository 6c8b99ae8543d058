#!/usr/bin/env bash
# Builds the solution, publishes the NativeAOT guest agent and the CLI into artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

dotnet build SandboxVM.slnx -c Release -v quiet -nologo
dotnet publish src/SandboxVM.Agent -c Release -o artifacts/agent -v quiet -nologo
# What the binary was published from: scripts/test.sh runs the tests' sandboxes on it while these match.
sha256sum src/SandboxVM.Agent/bin/Release/net10.0/linux-x64/{sandboxvm-agent,SandboxVM.Protocol}.dll >artifacts/agent/sandboxvm-agent.sources
dotnet publish src/SandboxVM.Cli -c Release -o artifacts/cli -v quiet -nologo
echo "build: agent at artifacts/agent/sandboxvm-agent, CLI at artifacts/cli/sandboxvm"
