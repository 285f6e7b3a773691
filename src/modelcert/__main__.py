from modelcert.cli import main

main()
