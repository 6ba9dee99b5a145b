from digitloc.serve.cli import main

main()
