from durapipe.cli import main

main()
