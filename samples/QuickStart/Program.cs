// The README's C# example: run once against a server on 127.0.0.1:8000 (scripts/serve.sh).
using SandboxVM.Client;

var result = await Sandbox.RunOnceAsync("print(sum(range(10)))",
    template: "python-data-analysis", baseUrl: "http://127.0.0.1:8000");
Console.WriteLine(result.Output);            // 45
Console.WriteLine(result.Status);            // Ok
Console.WriteLine(result.Metrics.TotalMs);

var cpp = await Sandbox.RunOnceAsync("#include <iostream>\nint main(){ std::cout << 6 * 7 << std::endl; }",
    template: "cpp-algorithm", baseUrl: "http://127.0.0.1:8000");
Console.WriteLine($"{cpp.Status}: {cpp.Output.Trim()} (compile {cpp.Metrics.CompileMs} ms)");
